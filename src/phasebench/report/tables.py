"""What a run, sweep or plan says, as tables and plain-words lines: built once here, shown by the terminal
(``show``, the end of ``run``) and by the HTML/Markdown report alike.

Every figure that comes from one step of a sweep or plan is labelled with that step; a plan's decode MBU and
prefill MFU are the ones its verdicts state (``plan.phase_verdicts``), not the per-step roofline blocks.
"""

from __future__ import annotations

from typing import Any

from ..results import Run
from . import fmt as F
from .blocks import Table
from .terminal import flag_percentile, small_sample_footnote

SWEEP_COLUMNS = ("point", "conc", "rate", "ok / fail", "req/s", "out tok/s", "TTFT p50 (ms)", "TTFT p99 (ms)",
                 "TPOT p50 (ms)", "TPOT p99 (ms)", "goodput (req/s)", "valid", "")
POINT_KEYS = ("max_concurrency", "request_rate", "completed", "failed", "request_throughput", "output_throughput",
              "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "median_e2el_ms", "request_goodput")


def is_plan(run: Run) -> bool:
    return run.manifest.get("kind") == "plan"


def step_name(run: Run, i: int = 0) -> str:
    return run.path.name if run.path else f"step {i + 1}"


def point_rows(run: Run) -> list[dict[str, Any]]:
    """A sweep's points as its summary lists them; from the step folders when the summary has none."""
    rows = run.summary.get("points")
    if rows:
        return list(rows)
    return [{"point": step_name(c, i), **{k: c.summary.get(k) for k in POINT_KEYS}, "valid": c.valid}
            for i, c in enumerate(run.children)]


def chosen(run: Run) -> str | None:
    """The step a sweep or plan goes on with: a plan's decode point that set the server step's rate (70% of its
    capacity), a sweep's highest-throughput valid point (any point when none is valid)."""
    if is_plan(run):
        if run.summary.get("capacity_step"):
            return str(run.summary["capacity_step"])
        dec = [(i, c) for i, c in enumerate(run.children) if step_name(c, i).startswith("decode-")]
        if not dec:
            return None
        return step_name(*max(dec, key=lambda ic: ic[1].summary.get("request_throughput") or 0)[::-1])
    rows = point_rows(run)
    pool = [r for r in rows if r.get("valid")] or rows
    best = max(pool, key=lambda r: r.get("output_throughput") or 0, default=None)
    return None if best is None else F.text(best.get("point"))


def headline(run: Run) -> tuple[Run, str | None]:
    """The run whose figures stand for the whole, and its step: itself; a plan's server step; a sweep's chosen
    point."""
    if not run.children:
        return run, None
    named = {step_name(c, i): c for i, c in enumerate(run.children)}
    pick = "server" if is_plan(run) and "server" in named else chosen(run)
    if pick in named:
        return named[pick], pick
    c = max(run.leaves(), key=lambda r: r.summary.get("output_throughput") or 0)
    return c, step_name(c)


def sweep_table(run: Run) -> Table:
    """One row per point of a sweep; the chosen one marked."""
    best = chosen(run)
    rows, marked, flagged = [], set(), set()
    for i, r in enumerate(point_rows(run)):
        name = F.text(r.get("point"))
        if name == best:
            marked.add(i)
        n = r.get("completed")
        rows.append([name, F.count(r.get("max_concurrency")), F.auto(r.get("request_rate")),
                     F.ratio(n, r.get("failed")), F.auto(r.get("request_throughput")),
                     F.num(r.get("output_throughput")), F.num(r.get("median_ttft_ms")),
                     flag_percentile(F.num(r.get("p99_ttft_ms")), "p99", n, flagged), F.num(r.get("median_tpot_ms")),
                     flag_percentile(F.num(r.get("p99_tpot_ms")), "p99", n, flagged), F.auto(r.get("request_goodput")),
                     F.text(bool(r.get("valid"))), "highest throughput" if name == best else ""])
    return Table(f"Sweep: {len(rows)} point(s)", SWEEP_COLUMNS, rows, marked=marked, note=small_sample_footnote(flagged))


def _figure(summary: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """A plan's decode MBU / prefill MFU as its verdict states it (older plan folders: the memory wall's MBU)."""
    for f in summary.get("figures") or []:
        if f.get("metric") == metric:
            return f
    wall = summary.get("memory_wall") or {}
    if metric == "decode MBU" and wall.get("decode_mbu") is not None:
        return {"metric": metric, "step": "decode-c1", "fraction": wall["decode_mbu"], "peak": "the probed bandwidth"}
    return None


def prefill_table(summary: dict[str, Any]) -> Table | None:
    pts = summary.get("prefill_sweep")
    if not pts:
        return None
    mfu = _figure(summary, "prefill MFU")
    at = _step_tokens(mfu.get("step")) if mfu else None
    rows, marked = [], set()
    for i, p in enumerate(pts):
        n = p.get("input_tokens")
        role = "prefill MFU step" if n is not None and n == at else ""
        if role:
            marked.add(i)
        rows.append([F.count(n), F.num(p.get("ttft_ms_p50")), F.num(p.get("prefill_tps_p50"), 0),
                     F.num(p.get("server_prompt_ms_p50")), role])
    return Table("Prefill: TTFT against input length (single stream, 1 output token)",
                 ("input tokens", "TTFT p50 (ms)", "prefill tok/s", "server prompt (ms)", ""), rows, marked=marked)


def _step_tokens(step: Any) -> int | None:
    """``prefill-1024`` / ``prefill-001024`` → 1024."""
    head, _, n = str(step or "").partition("-")
    return int(n) if head == "prefill" and n.isdigit() else None


def decode_table(run: Run) -> Table | None:
    s = run.summary
    pts = s.get("decode_sweep")
    if not pts:
        return None
    best, mbu = chosen(run), _figure(s, "decode MBU")
    rows, marked = [], set()
    for i, d in enumerate(pts):
        step = f"decode-c{d.get('concurrency')}"
        roles = (["sets the server step's rate"] if step == best else []) + \
            (["decode MBU step"] if mbu and mbu.get("step") == step else [])
        if step == best:
            marked.add(i)
        rows.append([F.count(d.get("concurrency")), F.num(d.get("tpot_ms_p50")), F.num(d.get("itl_token_ms_p50")),
                     F.num(d.get("server_tpot_ms_p50")), F.num(d.get("output_throughput")), "; ".join(roles)])
    return Table("Decode: TPOT and throughput against concurrency",
                 ("concurrency", "TPOT p50 (ms)", "ITL/token p50 (ms)", "server TPOT (ms)", "output tok/s", ""), rows,
                 marked=marked, note=_stop_note(s))


def _stop_note(s: dict[str, Any]) -> str | None:
    """Why the decode sweep stopped, unless the plan's notes already say it."""
    if not s.get("decode_stop") or any("decode sweep stopped" in str(n) for n in s.get("notes") or []):
        return None
    return f"decode sweep stopped: {s['decode_stop']}"


def steps_table(run: Run) -> Table:
    """The steps a plan has finished so far (a partial plan has no sweep tables yet)."""
    t = sweep_table(run)
    t.title = f"Steps done: {len(t.rows)}"
    return t


def server_lines(run: Run) -> list[str]:
    """The plan's server step in words, its p99s flagged when it has too few requests for them (and the
    footnote that says so)."""
    sv = run.summary.get("server")
    if not sv:
        return []
    flagged: set[str] = set()
    p99 = {k: flag_percentile(F.num(sv.get(f"p99_{k}_ms")), "p99", sv.get("completed"), flagged) for k in ("ttft", "tpot")}
    line = (f"Server step at {F.auto(sv.get('request_rate'))} req/s: {F.ratio(sv.get('completed'), sv.get('failed'))} "
            f"done / failed, TTFT p50/p99 {F.num(sv.get('median_ttft_ms'))}/{p99['ttft']} ms, TPOT "
            f"p50/p99 {F.num(sv.get('median_tpot_ms'))}/{p99['tpot']} ms, goodput "
            f"{F.auto(sv.get('request_goodput'))} req/s (SLO {plan_slo(run.summary)} met by "
            f"{F.pct(sv.get('slo_attainment'), 0)})")
    note = small_sample_footnote(flagged)
    return [line, note] if note else [line]


def plan_slo(summary: dict[str, Any]) -> str:
    if summary.get("slo"):
        return F.slo(summary["slo"])
    from ..plan import DEFAULT_SLO  # plan folders from before the summary carried its SLO

    return DEFAULT_SLO


def plan_tables(run: Run) -> list[Table]:
    """A plan's prefill and decode tables; the steps done so far for a plan that stopped early."""
    out = [t for t in (prefill_table(run.summary), decode_table(run)) if t is not None]
    if not out and run.children:
        out.append(steps_table(run))
    return out


def quality_line(run: Run) -> str | None:
    server = next((c for c in run.children if c.path is not None and c.path.name == "server"), None)
    q = ((server.summary.get("phasebench") or {}).get("quality") if server is not None else None) or {}
    if not q:
        return None
    return (f"Quality under the server step's load: score {F.num(q.get('score'), 3)} over {F.count(q.get('answered'))} "
            f"probes, {'valid' if q.get('valid') else 'INVALID'}")


# --- the figures that lead a report ------------------------------------------------------------------------
def utilization(run: Run) -> list[str]:
    """Decode MBU and prefill MFU in words, each with the step it comes from and the peak it is measured
    against: a plan's verdict figures, else the headline step's roofline block."""
    if is_plan(run):
        return [f"{f['metric']} {F.pct(f.get('fraction'), 0)} (step {f.get('step')}, against {f.get('peak')})"
                for f in (_figure(run.summary, "decode MBU"), _figure(run.summary, "prefill MFU")) if f]
    head, step = headline(run)
    rf = (head.summary.get("phasebench") or {}).get("roofline") or {}
    step = rf.get("step") or step
    where = f"step {step}, " if step and run.children else ""
    out = []
    if rf.get("mbu") is not None:
        out.append(f"decode MBU {F.pct(rf['mbu'])} ({where}against {F.num(rf.get('peak_bandwidth_gbps'), 0)} GB/s "
                   f"of {rf.get('hardware')})")
    if rf.get("mfu") is not None:
        out.append(f"prefill MFU {F.pct(rf['mfu'])} ({where}against the {rf.get('peak_flops_label') or 'catalog peak'})")
    return out


def lead_lines(run: Run) -> list[str]:
    """The answer in plain words: what the run reached, from which step, and what bounds it."""
    out = []
    head, step = headline(run)
    s = head.summary
    label = f" (step {step})" if step else ""
    if is_plan(run):
        out += server_lines(run)
    elif s:
        out.append(f"{F.auto(s.get('request_throughput'))} req/s, {F.num(s.get('output_throughput'))} output tok/s; "
                   f"TTFT p50/p99 {F.num(s.get('median_ttft_ms'))}/{F.num(s.get('p99_ttft_ms'))} ms; TPOT p50/p99 "
                   f"{F.num(s.get('median_tpot_ms'))}/{F.num(s.get('p99_tpot_ms'))} ms{label}")
        att = ((s.get("phasebench") or {}).get("slo") or {}).get("attainment")
        if s.get("request_goodput") is not None:
            out.append(f"goodput {F.auto(s['request_goodput'])} req/s: {F.pct(att, 0)} of requests met the SLO{label}")
    out += utilization(run)
    out += [str(v) for v in run.summary.get("verdicts") or []]
    c = (s.get("phasebench") or {}).get("cost") or {}
    if c.get("usd_per_1m_tokens") is not None:
        out.append(f"{F.usd(c['usd_per_1m_tokens'])} per 1M tokens (blended) on {c.get('devices')}× {c.get('hardware')}"
                   + (f", {F.usd(c['usd_per_1m_tokens_at_slo'])} counting only requests that met the SLO"
                      if c.get("usd_per_1m_tokens_at_slo") is not None else "") + label)
    return out


def _pb(s: dict[str, Any], *keys: str) -> Any:
    v: Any = s.get("phasebench") or {}
    for k in keys:
        v = (v or {}).get(k)
    return v


KEY_ROWS = (
    ("requests completed / failed", lambda s, f: F.ratio(s.get("completed"), s.get("failed"))
     if s.get("completed") is not None else F.MISSING),
    ("TTFT p50 / p99 (ms)", lambda s, f: _pair(s, "median_ttft_ms", "p99_ttft_ms", f)),
    ("TPOT p50 / p99 (ms)", lambda s, f: _pair(s, "median_tpot_ms", "p99_tpot_ms", f)),
    ("ITL p50 / p99 (ms)", lambda s, f: _pair(s, "median_itl_ms", "p99_itl_ms", f)),
    ("E2E p50 / p99 (ms)", lambda s, f: _pair(s, "median_e2el_ms", "p99_e2el_ms", f)),
    ("request throughput (req/s)", lambda s, f: F.num(s.get("request_throughput"), 2)),
    ("output throughput (tok/s)", lambda s, f: F.num(s.get("output_throughput"))),
    ("goodput (req/s)", lambda s, f: F.num(s.get("request_goodput"), 2)),
    ("SLO attainment", lambda s, f: F.pct(_pb(s, "slo", "attainment"))),
    ("$ per 1M tokens (blended)", lambda s, f: F.usd(_pb(s, "cost", "usd_per_1m_tokens"))),
    ("$ per 1M tokens at the SLO", lambda s, f: F.usd(_pb(s, "cost", "usd_per_1m_tokens_at_slo"))),
    ("output tokens per joule", lambda s, f: F.num(_pb(s, "cost", "output_tokens_per_joule"), 2)),
)


_SAMPLES = {"ttft": "ttft_ms", "tpot": "tpot_ms", "itl": "itl_chunk_ms", "e2el": "e2e_ms"}  # summary key → metric


def _pair(s: dict[str, Any], a: str, b: str, flagged: set[str] | None = None) -> str:
    """"p50 / p99" of a summary's top-level keys, each flagged when its metric has too few samples."""
    if F.missing(s.get(a), s.get(b)):
        return F.MISSING
    n = (_pb(s, "metrics", _SAMPLES[a.split("_")[1]]) or {}).get("count")
    return " / ".join(flag_percentile(F.num(s.get(k)), stat, n, flagged) for stat, k in (("p50", a), ("p99", b)))


def key_figures(runs: list[Run], names: list[str]) -> Table:
    """The headline step of each run side by side (its step in the column head), then each run's MBU/MFU as
    ``utilization`` states it; rows with nothing in any column are left out."""
    heads = [headline(r) for r in runs]
    cols = ["metric", *(f"{n} (step {step})" if step else n for n, (_, step) in zip(names, heads))]
    flagged: set[str] = set()
    rows = [[label, *(fn(h.summary, flagged) for h, _ in heads)] for label, fn in KEY_ROWS]
    utils = [utilization(r) for r in runs]
    for metric in ("decode MBU", "prefill MFU"):
        rows.append([metric, *(next((u[len(metric) + 1:] for u in us if u.startswith(metric)), F.MISSING)
                               for us in utils)])
    return Table("Key figures", cols, rows, note=small_sample_footnote(flagged)).compact()
