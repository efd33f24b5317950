"""What a run, sweep or plan says, as tables and plain-words lines: built once here, shown by the terminal
(``show``, the end of ``run``) and by the HTML/Markdown report alike.

Every figure that comes from one step of a sweep or plan is labelled with that step; a plan's decode MBU and
prefill MFU are the ones its verdicts state (``plan.phase_verdicts``), not the per-step roofline blocks.
"""

from __future__ import annotations

from typing import Any

from ..results import CostBlock, PlanFigure, Point, Run, SloBlock, Summary
from . import fmt as F
from .blocks import Table
from .terminal import flag_percentile, small_sample_footnote

SWEEP_COLUMNS = ("point", "conc", "rate", "ok / fail", "req/s", "out tok/s", "TTFT p50 (ms)", "TTFT p99 (ms)",
                 "TPOT p50 (ms)", "TPOT p99 (ms)", "goodput (req/s)", "valid", "")
POINT_KEYS = ("max_concurrency", "request_rate", "completed", "failed", "request_throughput", "output_throughput",
              "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "median_e2el_ms", "request_goodput")


def is_plan(run: Run) -> bool:
    return run.is_plan


def step_name(run: Run, i: int = 0) -> str:
    return run.path.name if run.path else f"step {i + 1}"


def point_rows(run: Run) -> list[Point]:  # type: ignore[valid-type]
    """A sweep's points as its summary lists them; from the step folders when the summary has none."""
    rows = run.result.points
    if rows:
        return list(rows)
    return [Point(point=step_name(c, i), **{k: getattr(c.result, k) for k in POINT_KEYS}, valid=c.valid)
            for i, c in enumerate(run.children)]


def chosen(run: Run) -> str | None:
    """The step a sweep or plan goes on with: a plan's decode point that set the server step's rate (70% of its
    capacity), a sweep's highest-throughput valid point (any point when none is valid)."""
    if is_plan(run):
        if run.result.capacity_step:
            return str(run.result.capacity_step)
        dec = [(i, c) for i, c in enumerate(run.children) if step_name(c, i).startswith("decode-")]
        if not dec:
            return None
        return step_name(*max(dec, key=lambda ic: ic[1].result.request_throughput or 0)[::-1])
    rows = point_rows(run)
    pool = [r for r in rows if r.valid] or rows
    best = max(pool, key=lambda r: r.output_throughput or 0, default=None)
    return None if best is None else F.text(best.point)


def headline(run: Run) -> tuple[Run, str | None]:
    """The run whose figures stand for the whole, and its step: itself; a plan's server step; a sweep's chosen
    point."""
    if not run.children:
        return run, None
    named = {step_name(c, i): c for i, c in enumerate(run.children)}
    pick = "server" if is_plan(run) and "server" in named else chosen(run)
    if pick in named:
        return named[pick], pick
    c = max(run.leaves(), key=lambda r: r.result.output_throughput or 0)
    return c, step_name(c)


def sweep_table(run: Run) -> Table:
    """One row per point of a sweep; the chosen one marked."""
    best = chosen(run)
    rows, marked, flagged = [], set(), set()
    for i, r in enumerate(point_rows(run)):
        name = F.text(r.point)
        if name == best:
            marked.add(i)
        n = r.completed
        rows.append([name, F.count(r.max_concurrency), F.auto(r.request_rate),
                     F.ratio(n, r.failed), F.auto(r.request_throughput),
                     F.num(r.output_throughput), F.num(r.median_ttft_ms),
                     flag_percentile(F.num(r.p99_ttft_ms), "p99", n, flagged), F.num(r.median_tpot_ms),
                     flag_percentile(F.num(r.p99_tpot_ms), "p99", n, flagged), F.auto(r.request_goodput),
                     F.text(bool(r.valid)), "highest throughput" if name == best else ""])
    return Table(f"Sweep: {len(rows)} point(s)", SWEEP_COLUMNS, rows, marked=marked, note=small_sample_footnote(flagged))


def _figure(summary: Summary, metric: str) -> PlanFigure | None:
    """A plan's decode MBU / prefill MFU as its verdict states it (older plan folders: the memory wall's MBU)."""
    for f in summary.figures or []:
        if f.metric == metric:
            return f
    wall = summary.memory_wall
    if metric == "decode MBU" and wall and wall.decode_mbu is not None:
        return PlanFigure(metric=metric, step="decode-c1", fraction=wall.decode_mbu, peak="the probed bandwidth")
    return None


def prefill_table(summary: Summary) -> Table | None:
    pts = summary.prefill_sweep
    if not pts:
        return None
    mfu = _figure(summary, "prefill MFU")
    at = _step_tokens(mfu.step) if mfu else None
    rows, marked = [], set()
    for i, p in enumerate(pts):
        n = p.input_tokens
        role = "prefill MFU step" if n is not None and n == at else ""
        if role:
            marked.add(i)
        rows.append([F.count(n), F.num(p.ttft_ms_p50), F.num(p.prefill_tps_p50, 0),
                     F.num(p.server_prompt_ms_p50), role])
    return Table("Prefill: TTFT against input length (single stream, 1 output token)",
                 ("input tokens", "TTFT p50 (ms)", "prefill tok/s", "server prompt (ms)", ""), rows, marked=marked)


def _step_tokens(step: Any) -> int | None:
    """``prefill-1024`` / ``prefill-001024`` → 1024."""
    head, _, n = str(step or "").partition("-")
    return int(n) if head == "prefill" and n.isdigit() else None


def decode_table(run: Run) -> Table | None:
    s = run.result
    pts = s.decode_sweep
    if not pts:
        return None
    best, mbu = chosen(run), _figure(s, "decode MBU")
    rows, marked = [], set()
    for i, d in enumerate(pts):
        step = f"decode-c{d.concurrency}"
        roles = (["sets the server step's rate"] if step == best else []) + \
            (["decode MBU step"] if mbu and mbu.step == step else [])
        if step == best:
            marked.add(i)
        rows.append([F.count(d.concurrency), F.num(d.tpot_ms_p50), F.num(d.itl_token_ms_p50),
                     F.num(d.server_tpot_ms_p50), F.num(d.output_throughput), "; ".join(roles)])
    return Table("Decode: TPOT and throughput against concurrency",
                 ("concurrency", "TPOT p50 (ms)", "ITL/token p50 (ms)", "server TPOT (ms)", "output tok/s", ""), rows,
                 marked=marked, note=_stop_note(s))


def _stop_note(s: Summary) -> str | None:
    """Why the decode sweep stopped, unless the plan's notes already say it."""
    if not s.decode_stop or any("decode sweep stopped" in str(n) for n in s.notes or []):
        return None
    return f"decode sweep stopped: {s.decode_stop}"


def steps_table(run: Run) -> Table:
    """The steps a plan has finished so far (a partial plan has no sweep tables yet)."""
    t = sweep_table(run)
    t.title = f"Steps done: {len(t.rows)}"
    return t


def server_lines(run: Run) -> list[str]:
    """The plan's server step in words, its p99s flagged when it has too few requests for them (and the
    footnote that says so)."""
    sv = run.result.server
    if not sv:
        return []
    flagged: set[str] = set()
    p99 = {k: flag_percentile(F.num(getattr(sv, f"p99_{k}_ms")), "p99", sv.completed, flagged) for k in ("ttft", "tpot")}
    line = (f"Server step at {F.auto(sv.request_rate)} req/s: {F.ratio(sv.completed, sv.failed)} "
            f"done / failed, TTFT p50/p99 {F.num(sv.median_ttft_ms)}/{p99['ttft']} ms, TPOT "
            f"p50/p99 {F.num(sv.median_tpot_ms)}/{p99['tpot']} ms, goodput "
            f"{F.auto(sv.request_goodput)} req/s (SLO {plan_slo(run.result)} met by "
            f"{F.pct(sv.slo_attainment, 0)})")
    note = small_sample_footnote(flagged)
    return [line, note] if note else [line]


def plan_slo(summary: Summary) -> str:
    if summary.slo:
        return F.slo(summary.slo)
    from ..plan import DEFAULT_SLO  # plan folders from before the summary carried its SLO

    return DEFAULT_SLO


def plan_tables(run: Run) -> list[Table]:
    """A plan's prefill and decode tables; the steps done so far for a plan that stopped early."""
    out = [t for t in (prefill_table(run.result), decode_table(run)) if t is not None]
    if not out and run.children:
        out.append(steps_table(run))
    return out


def quality_line(run: Run) -> str | None:
    server = next((c for c in run.children if c.path is not None and c.path.name == "server"), None)
    q = server.result.phasebench.quality if server is not None else None
    if not q:
        return None
    return (f"Quality under the server step's load: score {F.num(q.score, 3)} over {F.count(q.answered)} "
            f"probes, {'valid' if q.valid else 'INVALID'}")


# --- the figures that lead a report ------------------------------------------------------------------------
def utilization(run: Run) -> list[str]:
    """Decode MBU and prefill MFU in words, each with the step it comes from and the peak it is measured
    against: a plan's verdict figures, else the headline step's roofline block."""
    if is_plan(run):
        return [f"{f.metric} {F.pct(f.fraction, 0)} (step {f.step}, against {f.peak})"
                for f in (_figure(run.result, "decode MBU"), _figure(run.result, "prefill MFU")) if f]
    head, step = headline(run)
    rf = head.result.phasebench.roofline
    if rf is None:
        return []
    step = rf.step or step
    where = f"step {step}, " if step and run.children else ""
    out = []
    if rf.mbu is not None:
        out.append(f"decode MBU {F.pct(rf.mbu)} ({where}against {F.num(rf.peak_bandwidth_gbps, 0)} GB/s "
                   f"of {rf.hardware})")
    if rf.mfu is not None:
        out.append(f"prefill MFU {F.pct(rf.mfu)} ({where}against the {rf.peak_flops_label or 'catalog peak'})")
    return out


def lead_lines(run: Run) -> list[str]:
    """The answer in plain words: what the run reached, from which step, and what bounds it."""
    out = []
    head, step = headline(run)
    s = head.result
    label = f" (step {step})" if step else ""
    if is_plan(run):
        out += server_lines(run)
    elif head.summary:
        out.append(f"{F.auto(s.request_throughput)} req/s, {F.num(s.output_throughput)} output tok/s; "
                   f"TTFT p50/p99 {F.num(s.median_ttft_ms)}/{F.num(s.p99_ttft_ms)} ms; TPOT p50/p99 "
                   f"{F.num(s.median_tpot_ms)}/{F.num(s.p99_tpot_ms)} ms{label}")
        att = _slo(s).attainment
        if s.request_goodput is not None:
            out.append(f"goodput {F.auto(s.request_goodput)} req/s: {F.pct(att, 0)} of requests met the SLO{label}")
    out += utilization(run)
    out += [str(v) for v in run.result.verdicts or []]
    c = _cost(s)
    if c.usd_per_1m_tokens is not None:
        out.append(f"{F.usd(c.usd_per_1m_tokens)} per 1M tokens (blended) on {c.devices}× {c.hardware}"
                   + (f", {F.usd(c.usd_per_1m_tokens_at_slo)} counting only requests that met the SLO"
                      if c.usd_per_1m_tokens_at_slo is not None else "") + label)
    return out


def _slo(s: Summary) -> SloBlock:
    """The run's SLO block; an empty one (every figure None) when it has none."""
    return s.phasebench.slo or SloBlock()


def _cost(s: Summary) -> CostBlock:
    """The run's cost block; an empty one (every figure None) when it has none."""
    return s.phasebench.cost or CostBlock()


KEY_ROWS = (
    ("requests completed / failed", lambda s, f: F.ratio(s.completed, s.failed)
     if s.completed is not None else F.MISSING),
    ("TTFT p50 / p99 (ms)", lambda s, f: _pair(s, "median_ttft_ms", "p99_ttft_ms", f)),
    ("TPOT p50 / p99 (ms)", lambda s, f: _pair(s, "median_tpot_ms", "p99_tpot_ms", f)),
    ("ITL p50 / p99 (ms)", lambda s, f: _pair(s, "median_itl_ms", "p99_itl_ms", f)),
    ("E2E p50 / p99 (ms)", lambda s, f: _pair(s, "median_e2el_ms", "p99_e2el_ms", f)),
    ("request throughput (req/s)", lambda s, f: F.num(s.request_throughput, 2)),
    ("output throughput (tok/s)", lambda s, f: F.num(s.output_throughput)),
    ("goodput (req/s)", lambda s, f: F.num(s.request_goodput, 2)),
    ("SLO attainment", lambda s, f: F.pct(_slo(s).attainment)),
    ("$ per 1M tokens (blended)", lambda s, f: F.usd(_cost(s).usd_per_1m_tokens)),
    ("$ per 1M tokens at the SLO", lambda s, f: F.usd(_cost(s).usd_per_1m_tokens_at_slo)),
    ("output tokens per joule", lambda s, f: F.num(_cost(s).output_tokens_per_joule, 2)),
)


_SAMPLES = {"ttft": "ttft_ms", "tpot": "tpot_ms", "itl": "itl_chunk_ms", "e2el": "e2e_ms"}  # summary key → metric


def _pair(s: Summary, a: str, b: str, flagged: set[str] | None = None) -> str:
    """"p50 / p99" of a summary's top-level keys, each flagged when its metric has too few samples."""
    va, vb = getattr(s, a), getattr(s, b)
    if F.missing(va, vb):
        return F.MISSING
    st = getattr(s.phasebench.metrics, _SAMPLES[a.split("_")[1]])
    n = st.count if "count" in st.model_fields_set else None
    return " / ".join(flag_percentile(F.num(v), stat, n, flagged) for stat, v in (("p50", va), ("p99", vb)))


def key_figures(runs: list[Run], names: list[str]) -> Table:
    """The headline step of each run side by side (its step in the column head), then each run's MBU/MFU as
    ``utilization`` states it; rows with nothing in any column are left out."""
    heads = [headline(r) for r in runs]
    cols = ["metric", *(f"{n} (step {step})" if step else n for n, (_, step) in zip(names, heads))]
    flagged: set[str] = set()
    rows = [[label, *(fn(h.result, flagged) for h, _ in heads)] for label, fn in KEY_ROWS]
    utils = [utilization(r) for r in runs]
    for metric in ("decode MBU", "prefill MFU"):
        rows.append([metric, *(next((u[len(metric) + 1:] for u in us if u.startswith(metric)), F.MISSING)
                               for us in utils)])
    return Table("Key figures", cols, rows, note=small_sample_footnote(flagged)).compact()
