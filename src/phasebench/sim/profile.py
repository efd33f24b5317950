"""Phase profiles: the cost of one engine iteration, from the roofline model or fitted to measured runs.

An iteration processes prefill chunks (Σn tokens, Σn² for attention) and decode steps (B sequences at
total context Σctx). Both profiles answer ``iteration(sum_n, sum_n2, batch, sum_ctx) -> seconds``.

Fitted form (DistServe's): prefill = a + b·Σn + c·Σn²; decode = a + b·Σctx + c·B. A mixed iteration pays
the prefill part plus the decode part's variable terms (the weights are read once).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..model import fitcheck, phases
from ..model.errors import ModelError
from ..model.phases import Setup


class Profile(Protocol):
    def iteration(self, sum_n: float, sum_n2: float, batch: int, sum_ctx: float) -> float: ...

    def describe(self) -> dict[str, Any]: ...

    def forced_note(self) -> str | None:
        """Set when the profile rests on a fit stored with --force above the error limit (model/fitcheck.py)."""
        ...


class AnalyticProfile:
    """Iteration time from the roofline phase model of a (model, hardware, devices, precision, engine) setup.

    It calls the same cost functions as ``predict`` (``phases.Pass`` for HBM devices, ``phases.sram_pass`` /
    ``sram_prefill`` for SRAM pipelines), so a simulated request alone on the replica takes what ``predict``
    says (tested within 2% on every catalog device). An iteration that finishes a prompt pays the engine's fixed
    per-request cost (``request_s``) once: exact for one request at a time, and under load it stands for the
    engine's serialised per-request work (tokenisation, scheduling, sampling)."""

    def __init__(self, setup: Setup, engine: str | None = None) -> None:
        if engine is not None:
            from ..model.calibration import efficiency_for

            eff, _ = efficiency_for(setup.hardware, engine)
            setup = replace(setup, efficiency=eff, engine=eff.engine or engine)
        s = setup.resolved()
        self.s = s
        m, pr = s.model, s.precision
        self.kv_tok = m.kv_bytes_per_token(pr.kv)
        self.attn = 4.0 * m.q_dim * m.layers
        self.request_s = phases.request_s(s)
        self.sram = phases._sram_only(s.hardware)
        if not self.sram:   # the setup's constants worked out once, the iteration priced by one closure
            self.iteration = self._hbm_iteration(phases.Pass(s).timer())  # type: ignore[method-assign]

    def _hbm_iteration(self, time: Callable[[float, float, float, float], float]
                       ) -> Callable[[float, float, int, float], float]:
        """:meth:`iteration` of an HBM device as a closure (the simulator calls it every iteration)."""
        attn, kv_tok, request_s = self.attn, self.kv_tok, self.request_s

        def iteration(sum_n: float, sum_n2: float, batch: int, sum_ctx: float) -> float:
            # one LM-head row per decoding sequence and per finishing prompt
            t = time(sum_n + batch, attn * (sum_n2 / 2 + sum_ctx), kv_tok * (sum_ctx + sum_n),
                     batch + (1 if sum_n else 0))
            return t + (request_s if sum_n else 0.0)

        return iteration

    def iteration(self, sum_n: float, sum_n2: float, batch: int, sum_ctx: float) -> float:
        """An SRAM pipeline's iteration (an HBM device's is the closure ``__init__`` puts in its place)."""
        s = self.s
        # one sequence at a time: a prompt, or one decode token at its context
        t = phases.sram_prefill(s, max(int(sum_n), 1)).time_s if sum_n else 0.0
        if batch:
            t += batch * phases.sram_pass(s, sum_ctx / batch).time_s
        return t + (self.request_s if sum_n else 0.0)

    def forced_note(self) -> str | None:
        return self.s.efficiency.warning or None   # a forced calibration's note (model/calibrate.py)

    def describe(self) -> dict[str, Any]:
        s = self.s
        return {"kind": "analytic", "model": s.model.name, "hardware": s.hardware.key, "devices": s.devices,
                "tp": s.tp, "pp": s.pp, "precision": asdict(s.precision), "engine": s.engine,
                "efficiency": s.efficiency.to_dict()}


@dataclass
class FittedProfile:
    prefill: tuple[float, float, float]   # a, b (per token), c (per token²)
    decode: tuple[float, float, float]    # a, b (per context token), c (per sequence)
    source: list[str] = field(default_factory=list)
    error: dict[str, float] = field(default_factory=dict)
    points: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    model: str | None = None
    hardware: str | None = None
    # measured decode iteration per batch size: (batch, Σctx, seconds). Engines rarely scale linearly in batch
    # (on a 2-core CPU batch 2 can cost twice batch 1), so where the runs measured a batch size the profile
    # uses it, adjusted by b·(Σctx − the measured Σctx); between sizes it interpolates, beyond them the line.
    decode_table: list[tuple[float, float, float]] = field(default_factory=list)
    forced: bool = False   # saved with --force although its fit error is above fitcheck.MAX_FIT_ERROR

    @property
    def fit_error(self) -> float | None:
        """The store rule's error: the worse of the prefill and decode fits' median |relative error| on their
        own points (the decode line a + b·Σctx + c·B, which is what extrapolates past the measured batches)."""
        e = [self.error.get(k) for k in ("prefill_median_abs", "decode_median_abs")]
        return max(e) if None not in e else None

    def forced_note(self) -> str | None:
        if not self.forced:
            return None
        return fitcheck.forced_note("this fitted profile", self.fit_error or 0.0, sum(self.points.values()))

    def _decode(self, batch: int, sum_ctx: float) -> float:
        da, db, dc = self.decode
        tab = self.decode_table
        if not tab or batch < tab[0][0] or batch > tab[-1][0]:
            return da + db * sum_ctx + dc * batch
        for (b0, c0, t0), (b1, c1, t1) in zip(tab, tab[1:]):
            if b0 <= batch <= b1:
                w = (batch - b0) / (b1 - b0)
                return (1 - w) * t0 + w * t1 + db * (sum_ctx - ((1 - w) * c0 + w * c1))
        b0, c0, t0 = tab[0]
        return t0 + db * (sum_ctx - c0)

    def iteration(self, sum_n: float, sum_n2: float, batch: int, sum_ctx: float) -> float:
        pa, pb, pc = self.prefill
        t = 0.0
        if sum_n:
            t += pa + pb * sum_n + pc * sum_n2
        if batch:
            t += self._decode(batch, sum_ctx) - (self.decode[0] if sum_n else 0.0)
        return t

    def describe(self) -> dict[str, Any]:
        return {"kind": "fitted", **asdict(self)}

    def save(self, path: Path, force: bool = False) -> None:
        """Write the profile, if it passes the store rule (``fitcheck.check``: FitRefused above the error limit
        unless ``force``, which stores it marked as forced)."""
        err = self.fit_error
        if err is not None:
            e = self.error
            detail = (f"prefill {e['prefill_median_abs']:.0%} over {self.points.get('prefill', 0)} requests, decode "
                      f"{e['decode_median_abs']:.0%} over {self.points.get('decode', 0)} batch points")
            self.forced = fitcheck.check("the fitted profile", err, sum(self.points.values()), detail, force) is not None
        path.write_text(json.dumps(self.describe(), indent=2))

    @classmethod
    def load(cls, path: Path) -> FittedProfile:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ModelError(f"cannot read profile {path}: {e}") from None
        if d.get("kind") != "fitted":
            raise ModelError(f"{path} is not a fitted phasebench profile")
        d.pop("kind")
        return cls(**{**d, "prefill": tuple(d["prefill"]), "decode": tuple(d["decode"]),
                      "decode_table": [tuple(x) for x in d.get("decode_table", [])]})


def _lstsq(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares in relative error with coefficients ≥ 0 (drop a negative one and refit)."""
    w = 1.0 / y
    cols = list(range(X.shape[1]))
    while True:
        coef, *_ = np.linalg.lstsq(X[:, cols] * w[:, None], y * w, rcond=None)
        if (coef >= 0).all() or len(cols) == 1:
            out = np.zeros(X.shape[1])
            out[cols] = np.maximum(coef, 0)
            return out
        cols.pop(int(np.argmin(coef)))


def decode_gaps(records: list) -> list[tuple[float, float, float]]:  # noqa: ANN001
    """Clean decode iterations from a run's timelines: (Σctx, batch, seconds) per (batch size) group.

    Each gap between two single-token chunks of a request is one engine iteration. Gaps during which another
    request was waiting for its first token (sent before the gap ended, first token after it began) are dropped:
    the engine may have run that prompt in the same iteration (a mixed iteration, not a clean decode step). The batch is the number of
    requests between their first and last token at the gap's midpoint; Σctx adds each one's prompt and the
    tokens it had by then. Points are the medians per batch size, so a few hundred gaps give a few robust points.
    """
    import bisect

    recs = [r for r in records if r.ok and not r.warmup and len(r.chunk_ns) >= 2 and r.first_token_ns]
    if not recs:
        return []
    by_sent = sorted(recs, key=lambda r: r.sent_ns if r.sent_ns is not None else r.first_token_ns)
    sent = [r.sent_ns if r.sent_ns is not None else r.first_token_ns for r in by_sent]
    latest_first = np.maximum.accumulate([r.first_token_ns for r in by_sent]).tolist()  # over requests sent so far
    groups: dict[int, list[tuple[float, float]]] = {}
    for r in recs:
        for k in range(1, len(r.chunk_ns)):
            a, b = r.chunk_ns[k - 1], r.chunk_ns[k]
            if (r.chunk_tokens and r.chunk_tokens[k] != 1) or b <= a:
                continue
            j = bisect.bisect_left(sent, b)
            if j and latest_first[j - 1] > a:
                continue  # a request sent before b still awaited its first token after a: a mixed iteration
            mid = (a + b) / 2
            live = [o for o in recs if o.first_token_ns <= mid <= (o.last_token_ns or 0)]
            ctx = sum((o.prompt_tokens or o.input_tokens or 0) + bisect.bisect_right(o.chunk_ns, mid) for o in live)
            groups.setdefault(len(live), []).append((ctx, (b - a) / 1e9))
    out = []
    for batch, pts in sorted(groups.items()):
        if len(pts) >= 5:
            out.append((float(np.median([c for c, _ in pts])), float(batch), float(np.median([g for _, g in pts]))))
    return out


def prefill_waves(records: list, together_ns: int = 2_000_000) -> list[tuple[float, float, float]]:  # noqa: ANN001
    """Clean batched prefill iterations read off a concurrent run: (Σn, Σn², seconds) per wave.

    A wave is a group of requests sent together (within ``together_ns`` of each other, or 10% of the wait) whose
    first tokens also arrived together, while no other request was streaming or waiting: the engine ran their
    prompts as one iteration (a closed loop whose slots finish at once sends such waves). Its time is the first
    token minus the last send. Engines amortise a prefill iteration's fixed cost over the prompts batched in it,
    which single-stream points cannot show; without these points a fit charges 4 short prompts 4 times it."""
    recs = sorted((r for r in records if r.ok and not r.warmup and r.first_token_ns and r.sent_ns is not None),
                  key=lambda r: r.first_token_ns)
    groups: list[list] = []
    for r in recs:
        if groups and r.first_token_ns - groups[-1][0].first_token_ns <= together_ns:
            groups[-1].append(r)
        else:
            groups.append([r])
    out = []
    for g in groups:
        if len(g) < 2:
            continue
        first = g[0].first_token_ns
        sent0, sent1 = min(r.sent_ns for r in g), max(r.sent_ns for r in g)
        wait = first - sent1
        if wait <= 0 or sent1 - sent0 > max(together_ns, 0.1 * wait):
            continue
        ids = {id(r) for r in g}
        busy = any(id(o) not in ids and o.sent_ns < first and (o.end_ns or o.last_token_ns or first) > sent0
                   for o in recs)
        if busy:  # another request streamed or queued meanwhile: a mixed iteration, not a clean prefill
            continue
        n = [float(r.prompt_tokens or r.input_tokens or 0) for r in g]
        out.append((sum(n), sum(x * x for x in n), wait / 1e9))
    return out


def fit_profile(runs: list, min_points: int = 2) -> FittedProfile:  # noqa: ANN001
    """Fit from measured runs (plans and sweeps count all their steps): single-stream TTFT and the clean batched
    prefill waves of concurrent runs for prefill (:func:`prefill_waves`), and clean decode iterations read off
    every run's token timelines for decode (see :func:`decode_gaps`)."""
    pre: list[tuple[float, float, float]] = []       # (Σn, Σn², seconds)
    dec: list[tuple[float, float, float]] = []  # (sum_ctx, batch, seconds)
    names, model, hw = [], None, None
    for run in runs:
        for leaf in run.leaves():
            sp = leaf.manifest.get("spec") or {}
            names.append(str(leaf.path))
            model = model or (leaf.manifest.get("model_file") or {}).get("name") or sp.get("model_spec")
            hw = hw or sp.get("hardware") or ("local" if leaf.manifest.get("model_file") else None)
            if leaf.ran_alone:
                for r in leaf.records:
                    if r.ok and not r.warmup and r.first_token_ns and r.sent_ns is not None:
                        n = float(r.prompt_tokens or r.input_tokens or 0)
                        pre.append((n, n * n, (r.first_token_ns - r.sent_ns) / 1e9))
            else:
                pre += prefill_waves(leaf.records)
            dec += decode_gaps(leaf.records)
    warnings = []
    sizes = {n for n, _, _ in pre}
    if len(pre) < min_points or len(sizes) < 2:
        raise ModelError(f"too few prefill points to fit ({len(pre)} requests over {len(sizes)} prompt "
                         "lengths): need single-stream runs at two or more prompt lengths")
    if len(dec) < 1:
        raise ModelError("no decode point to fit: need runs that stream more than one output token per request")
    P = np.array(pre)
    Xp = np.column_stack([np.ones(len(P)), P[:, 0], P[:, 1]])
    if len(sizes) < 3:
        Xp[:, 2] = 0
        warnings.append("prefill: fewer than 3 prompt lengths, the n² term is not fitted")
    cp = _lstsq(Xp, P[:, 2])
    D = np.array(dec)
    Xd = np.column_stack([np.ones(len(D)), D[:, 0], D[:, 1]])
    if len(D) < 3:
        warnings.append(f"decode: only {len(D)} point(s); the fit is underdetermined (per-sequence term dropped)")
        Xd = Xd[:, :2] if len(D) == 2 else Xd[:, :1]
    cd = _lstsq(Xd, D[:, 2])
    cd = np.concatenate([cd, np.zeros(3 - len(cd))])
    by_batch: dict[float, list[tuple[float, float]]] = {}
    for ctx, b, sec in dec:
        by_batch.setdefault(b, []).append((ctx, sec))
    table = [(b, float(np.median([c for c, _ in v])), float(np.median([x for _, x in v]))) for b, v in sorted(by_batch.items())]
    prof = FittedProfile(tuple(float(x) for x in cp), tuple(float(x) for x in cd), sorted(set(names)), {},
                         {"prefill": len(P), "decode": len(D)}, warnings, model, hw, table)
    err_p = np.abs(Xp @ cp / P[:, 2] - 1)
    err_d = np.abs(np.column_stack([np.ones(len(D)), D[:, 0], D[:, 1]]) @ cd / D[:, 2] - 1)
    err_t = np.abs(np.array([prof._decode(int(b), c) / sec - 1 for c, b, sec in dec]))
    prof.error = {"prefill_median_abs": float(np.median(err_p)), "decode_median_abs": float(np.median(err_d)),
                  "prefill_mean_abs": float(err_p.mean()), "decode_mean_abs": float(err_d.mean()),
                  "prefill_max_abs": float(err_p.max()), "decode_max_abs": float(err_d.max()),
                  "decode_table_mean_abs": float(err_t.mean())}
    return prof
