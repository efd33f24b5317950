"""Results from other tools, turned into phasebench run folders so `show`, `compare`, `report` and the database
treat them like any run.

``vllm bench serve --save-result`` JSON: its per-request lists (``ttfts`` and ``itls`` in seconds,
``input_lens``, ``output_lens``, ``errors``, and ``start_times``/``request_submit_times`` where the version writes them) become
``RequestRecord``s; the summary is phasebench's own, computed from them, with vLLM's run-level figures
(duration, throughputs) kept as vLLM measured them, since per-request send times are not always recorded.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson

from .records import RequestRecord, write_records
from .results import NotARunError, Run, RunFolder

VLLM_KEEP = ("date", "backend", "model_id", "tokenizer_id", "num_prompts", "request_rate", "burstiness",
             "max_concurrency", "duration", "completed", "total_input_tokens", "total_output_tokens",
             "request_throughput", "request_goodput", "output_throughput", "total_token_throughput")


def is_vllm_bench_result(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("ttfts"), list) and "backend" in obj and "model_id" in obj


def _s_to_ns(v: Any) -> int | None:
    return int(round(float(v) * 1e9)) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else None


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _created(date: Any) -> str | None:
    """vLLM's ``date`` (``YYYYMMDD-HHMMSS``, local time of the machine that ran it) as ISO 8601, so the results
    database sorts and filters imported runs with the others (``history --since``); other text is kept as is."""
    if not isinstance(date, str):
        return None
    try:
        return dt.datetime.strptime(date, "%Y%m%d-%H%M%S").isoformat()
    except ValueError:
        return date


def vllm_records(obj: dict[str, Any]) -> list[RequestRecord]:
    ttfts, itls = obj.get("ttfts") or [], obj.get("itls") or []
    ins, outs = obj.get("input_lens") or [], obj.get("output_lens") or []
    errors = obj.get("errors") or []
    starts = obj.get("start_times") or obj.get("request_submit_times") or []
    t_first = min((s for s in starts if isinstance(s, (int, float))), default=0.0)
    recs = []
    for i, ttft in enumerate(ttfts):
        start = _s_to_ns((starts[i] - t_first) if i < len(starts) and isinstance(starts[i], (int, float)) else 0.0) or 0
        n_in = ins[i] if i < len(ins) and _count(ins[i]) else None
        rec = RequestRecord(index=i, request_id=f"vllm-{i}", scheduled_ns=start, sent_ns=start,
                            input_tokens=n_in, prompt_tokens=n_in)
        err = errors[i] if i < len(errors) else ""
        t = _s_to_ns(ttft)
        gaps = itls[i] if i < len(itls) and isinstance(itls[i], list) else []
        if err or t is None or (not t and not gaps):
            # vLLM's file keeps only the error text: its kind (HTTP status, timeout, client) is not known
            rec.error_type, rec.error, rec.end_ns = "imported_error", f"vllm bench: {str(err)[:280] or 'failed'}", start
            recs.append(rec)
            continue
        now = start + t
        rec.first_byte_ns = rec.headers_ns = rec.first_token_ns = rec.first_answer_ns = now
        chunks = [now]
        for g in gaps:
            ns = _s_to_ns(g)
            if ns is None:
                continue
            now += ns
            chunks.append(now)
        rec.chunk_ns = chunks
        rec.chunk_tokens = [1] * len(chunks)
        rec.last_token_ns = rec.end_ns = now
        n_out = outs[i] if i < len(outs) and isinstance(outs[i], int) else len(chunks)
        rec.output_tokens, rec.output_tokens_client, rec.output_tokens_source = n_out, len(chunks), "usage"
        if n_out > len(chunks):  # vLLM's itls are per chunk: spread the tokens as phasebench does
            extra = n_out - len(chunks)
            rec.chunk_tokens = [1 + extra // len(chunks) + (1 if k < extra % len(chunks) else 0) for k in range(len(chunks))]
        rec.finish_reason = "length"
        recs.append(rec)
    return recs


def import_vllm_bench(path: Path, out: Path | None = None) -> Run:
    """A ``vllm bench serve --save-result`` file as a run folder (default: beside it, named after it)."""
    from . import __version__
    from .metrics import RunContext, summarize
    from .spec import SLO

    try:
        obj = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise NotARunError(f"{path}: not a readable JSON file ({e})") from None
    if not is_vllm_bench_result(obj):
        raise NotARunError(f"{path}: not a `vllm bench serve --save-result` file (no ttfts/backend/model_id)")
    recs = vllm_records(obj)
    folder = RunFolder(out or Path(path).with_suffix(""))
    conc = obj.get("max_concurrency")
    rate = obj.get("request_rate")
    ctx = RunContext(scenario="concurrency" if conc else "server", slo=SLO(),
                     target_rate=rate if isinstance(rate, (int, float)) else None,
                     concurrency=conc if isinstance(conc, int) else None, exact_output=False,
                     extra_warnings=["imported from vllm bench serve: its own client measured these; per-request "
                                     "send times " + ("from start_times" if (obj.get("start_times") or obj.get("request_submit_times")) else "not recorded: "
                                                      "duration and throughputs are vLLM's")])
    summary = summarize(recs, ctx)
    for k in VLLM_KEEP:
        if k in obj and (k not in summary or not (obj.get("start_times") or obj.get("request_submit_times"))):
            summary[k] = obj[k]
    manifest = {"kind": "run", "simulated": False, "phasebench_version": __version__, "created": _created(obj.get("date")),
                "imported_from": {"tool": "vllm bench serve", "file": str(Path(path).name),
                                  "backend": obj.get("backend")},
                "spec": {"scenario": ctx.scenario, "concurrency": [conc] if isinstance(conc, int) else [],
                         "rate": [rate] if isinstance(rate, (int, float)) else []},
                "target": {"model": obj.get("model_id")}, "tokenizer": obj.get("tokenizer_id")}
    from .analysis import write_run

    write_records(folder.requests_path, recs)
    write_run(folder, manifest, summary)  # and mlperf_log_summary.txt, as for a run phasebench measured
    return Run.load(folder.path)
