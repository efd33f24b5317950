"""The ``phasebench.quality`` block of summary.json: the probes' answers scored, the server's health, the
agreement with a reference, and the validity reasons these feed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..records import RequestRecord
from .probes import ProbeSet, load_probe_set
from .reference import Reference, agreement
from .scoring import ItemScore, broken_reasons, score_item

DEFAULT_THRESHOLD = 0.99  # MLPerf: an accuracy run must reach 99% of the reference's score


@dataclass
class QualityOptions:
    """What ``--quality*`` asked for (the RunSpec fields, as the runner passes them)."""

    probe_set: ProbeSet
    alone: bool = False
    reference: Path | None = None
    threshold: float = DEFAULT_THRESHOLD


@dataclass
class Answers:
    """The first finished answer to each probe (repeats, from a closed loop cycling its pool, are counted)."""

    items: list[ItemScore]
    output_tokens: list[int | None]
    max_tokens: list[int]
    sent: int
    repeats: int
    errors: int
    speed: dict[str, Any] = field(default_factory=dict)


def options_for(spec: Any) -> QualityOptions | None:
    """The quality probes a run spec asks for (``--quality``), read and checked before any traffic; or None."""
    if not spec.quality:
        return None
    if spec.quality_ref is not None:
        Reference.load(spec.quality_ref)  # a bad reference is a one-line error before the run, not after it
    return QualityOptions(load_probe_set(spec.quality_set), spec.quality_alone, spec.quality_ref, spec.quality_threshold)


def collect(probe_set: ProbeSet, records: Sequence[RequestRecord]) -> Answers:
    first: dict[str, RequestRecord] = {}
    repeats = errors = 0
    for r in sorted(records, key=lambda r: (r.sent_ns or 0, r.index)):
        if r.probe is None:
            continue
        if r.error:
            errors += 1
        if r.probe in first and first[r.probe].ok:
            repeats += 1
            continue
        first[r.probe] = r
    items, n_out, n_max = [], [], []
    for p in probe_set.probes:
        r = first.get(p.id)
        if r is None:
            items.append(score_item(p, None, None, "not sent (the run ended first)"))
            n_out.append(None)
        else:
            items.append(score_item(p, r.text if r.ok else None, r.logprobs, r.error))
            n_out.append(r.output_tokens)
        n_max.append(p.output_tokens)
    ok = [r for r in first.values() if r.ok and r.first_token_ns is not None]
    speed: dict[str, Any] = {}
    if ok:
        ttft = sorted((r.first_token_ns - r.scheduled_ns) / 1e6 for r in ok)  # type: ignore[operator]
        speed["ttft_ms_median"] = round(ttft[len(ttft) // 2], 3)
        speed["requests"] = len(ok)
    return Answers(items, n_out, n_max, len(first) + repeats, repeats, errors, speed)


def mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def score_of(items: Sequence[ItemScore]) -> float | None:
    """The quality score: the mean of the item scores (0..1), unanswered probes counting 0."""
    return mean([it.score for it in items])


def quality_block(opts: QualityOptions, records: Sequence[RequestRecord],
                  alone: Sequence[RequestRecord] | None = None) -> dict[str, Any]:
    ps = opts.probe_set
    ans = collect(ps, records)
    score = score_of(ans.items)
    by_kind = {k: mean([it.score for it in ans.items if it.kind == k]) for k in ("generate", "choice")}
    reasons = broken_reasons(ans.items, ans.output_tokens, ans.max_tokens, score)
    unanswered = [it.id for it in ans.items if it.method == "unanswered"]
    warnings: list[str] = []
    if unanswered and not reasons:
        warnings.append(f"quality: {len(unanswered)} of {len(ps.probes)} probes unanswered ({', '.join(unanswered[:5])}…)"
                        if len(unanswered) > 5 else f"quality: probes unanswered: {', '.join(unanswered)}")
    methods = sorted({it.method for it in ans.items if it.kind == "choice" and it.method != "unanswered"})
    block: dict[str, Any] = {
        "probe_set": ps.name,
        "probes": len(ps.probes),
        "answered": len(ps.probes) - len(unanswered),
        "sent": ans.sent,
        "repeats": ans.repeats,
        "score": _r(score),
        "score_generate": _r(by_kind["generate"]),
        "score_choice": _r(by_kind["choice"]),
        "exact_match": _r(mean([float(it.exact) for it in ans.items if it.kind == "generate"])),
        "choice_method": methods[0] if len(methods) == 1 else ("mixed" if methods else None),
        "logprobs": any(it.tokens for it in ans.items),
        "in_speed_metrics": False,
        "probe_speed": ans.speed,
        "items": [it.to_dict() for it in ans.items],
        "valid": not reasons,
        "reasons": reasons,
        "warnings": warnings,
    }
    if alone is not None:
        a = collect(ps, alone)
        same = [x.text == y.text for x, y in zip(ans.items, a.items) if x.text is not None and y.text is not None]
        block["alone"] = {"score": _r(score_of(a.items)), "answers_equal_under_load": _r(mean([float(s) for s in same])),
                          "items": [it.to_dict() for it in a.items]}
    if opts.reference is not None:
        ref = Reference.load(opts.reference)
        ag = agreement(ans.items, ref)
        need = opts.threshold * ref.score if ref.score is not None else None
        passed = score is not None and need is not None and score >= need - 1e-12
        ag.update({"reference": str(opts.reference), "reference_score": _r(ref.score), "threshold": opts.threshold,
                   "required_score": _r(need), "passed": passed})
        block["reference"] = ag
        if not passed:
            block["valid"] = False
            block["reasons"].append(
                f"quality: score {_fmt(score)} is below {opts.threshold:.0%} of the reference's {_fmt(ref.score)} "
                f"(needs {_fmt(need)}; {opts.reference})")
    return block


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def apply_validity(summary: dict[str, Any], block: dict[str, Any]) -> None:
    """The quality verdict joins the run's: an invalid quality block makes the run invalid, whatever its speed."""
    pb = summary["phasebench"]
    pb["quality"] = block
    if not block["valid"]:
        pb["valid"] = False
        pb["reasons"] = list(pb.get("reasons", [])) + block["reasons"]
    pb["warnings"] = list(pb.get("warnings", [])) + block["warnings"]
