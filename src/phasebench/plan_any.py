"""The phase-aware plan against any OpenAI-compatible server: ``phasebench run --url URL --plan``.

1. discover the server (model, engine, context length from ``/v1/models`` ``max_model_len`` where given);
2. prefill sweep: TTFT at exact input lengths up to the server's context, one output token;
3. decode sweep: concurrency 1, 2, 4, … doubled until output throughput rises by less than
   ``GAIN_STOP`` (the batch is full), a TTFT/TPOT SLO breaks, the plan's largest concurrency or its time
   budget is reached — and the summary says which;
4. a server-scenario (Poisson) run at 70% of the measured capacity under the SLO;
then the verdicts against the memory wall of ``--hardware`` (default ``local``) and ``--model-spec``
(guessed from the served model id only where one catalog entry matches, and said so). Every step is an
ordinary run folder carrying the roofline block and the engine's own server view.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from .report import fmt as F
from .results import Run, RunFolder
from .runner import RunStopped, api_key, discover, run_main, run_one
from .spec import SLO, RunSpec, Scenario, SpecError, parse_slo
from .textsafe import markup as escape

GAIN_STOP = 0.05  # decode sweep: stop doubling when output throughput rises by less than this
CAPACITY_FRACTION = 0.7


@dataclass(frozen=True)
class AnyShape:
    prefill_lengths: tuple[int, ...]  # candidates; capped at the server's context
    prefill_repeats: int
    max_concurrency: int
    decode_input: int
    decode_output: int
    requests_per_slot: int
    server_seconds: float
    budget_s: float


NO_QUALITY = {"quality": False, "quality_alone": False, "quality_set": None, "quality_ref": None}
QUICK = AnyShape((32, 256, 1024), 1, 8, 32, 32, 2, 8.0, 180.0)
FULL = AnyShape((128, 512, 2048, 8192, 32768, 131072), 3, 512, 128, 128, 3, 60.0, 600.0)


def parse_budget(text: str | None, default: float) -> float:
    """``10m``, ``600s``, ``1h``, ``90`` (seconds) -> seconds."""
    if text is None:
        return default
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise SpecError(f"--plan-budget {text!r}: use a duration such as 10m, 600s or 1h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def prefill_lengths(shape: AnyShape, context: int | None, output_tokens: int = 1) -> tuple[list[int], str]:
    """The sweep's input lengths, and where the ceiling came from."""
    if context:
        cap = context - output_tokens - 8  # room for BOS/template tokens the server may add
        why = f"up to the server's context ({context} tokens, from /v1/models max_model_len)"
    else:
        cap = 4096 if shape is FULL else 1024
        why = f"the server does not say its context length: up to {cap} tokens"
    lens = [n for n in shape.prefill_lengths if n <= cap]
    if cap > 0 and (not lens or lens[-1] < cap) and context:
        lens.append(cap)
    return lens, why


def guess_model_spec(served: str) -> tuple[str | None, str]:
    """The catalog model a served id names, only when exactly one entry fits; (key or None, what was done)."""
    from .model.arch import catalog

    s = served.lower().replace("_", "-")
    tail = s.rsplit("/", 1)[-1]
    hits = []
    for key, m in catalog().items():
        hf = m.source.split("huggingface.co/")[-1].split("/blob/")[0].lower()
        if s == hf or tail == hf.rsplit("/", 1)[-1]:
            return key, f"model guessed from the served id {served!r}: catalog {key} (its Hugging Face id)"
        if re.search(r"(^|[^a-z0-9.])" + re.escape(key) + r"($|[^a-z0-9.])", tail):
            hits.append(key)
    longest = [k for k in hits if not any(k != o and k in o for o in hits)]
    if len(longest) == 1:
        return longest[0], f"model guessed from the served id {served!r}: catalog {longest[0]} (name match; " \
                           "pass --model-spec to be sure)"
    if longest:
        return None, f"served id {served!r} matches several catalog models ({', '.join(longest)}): pass --model-spec"
    return None, f"served id {served!r} names no catalog model: pass --model-spec for MBU/MFU and verdicts"


def decode_decision(points: list[dict[str, Any]], max_c: int, out_of_time: bool) -> str | None:
    """Why the decode sweep stops after ``points`` (None: go on doubling). Each point: concurrency,
    output_throughput, slo_ok."""
    last = points[-1]
    if last.get("slo_ok") is False:
        return f"the SLO broke at concurrency {last['concurrency']}"
    if len(points) >= 2:
        prev = points[-2]
        a, b = prev.get("output_throughput") or 0, last.get("output_throughput") or 0
        gain = b / a - 1 if a else float("inf")
        if gain < GAIN_STOP:
            return (f"output throughput rose only {gain:+.1%} from concurrency {prev['concurrency']} to "
                    f"{last['concurrency']} (< {GAIN_STOP:.0%}): the batch is full")
    if last["concurrency"] * 2 > max_c:
        return f"reached the plan's largest concurrency ({max_c})"
    if out_of_time:
        return f"the plan's time budget ran out after concurrency {last['concurrency']}"
    return None


def run_url_plan(spec: RunSpec, quick: bool = False, budget: str | None = None, console: Console | None = None,
                 json_out: bool = False) -> Run:
    from .report.plan import print_plan

    console = console or Console()
    shape = QUICK if quick else FULL
    seconds = parse_budget(budget, shape.budget_s)
    out = spec.out or Path("runs") / ("plan-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    try:
        result = run_main(_plan(spec, shape, seconds, RunFolder(out), console))
    except RunStopped as e:
        console.print(f"[yellow]{escape(str(e))}: partial results kept in {escape(str(out))}[/]")
        raise SystemExit(e.exit_code) from e
    if json_out:
        import orjson

        print(orjson.dumps(result.summary, option=orjson.OPT_INDENT_2).decode())
    else:
        print_plan(result, console)
    return result


async def _plan(spec: RunSpec, shape: AnyShape, budget_s: float, folder: RunFolder, console: Console) -> Run:
    from .client.engines import max_model_len
    from .model.utilization import ensure_local_hardware
    from .plan import PlanSteps, plan_summary
    from .workload.synthetic import new_nonce

    t_start = time.monotonic()
    elapsed = lambda: time.monotonic() - t_start  # noqa: E731
    key = api_key(spec)
    async with aiohttp.ClientSession(headers=spec.headers) as s:
        target = await discover(spec, s, key)
    notes: list[str] = []
    model_spec = spec.model_spec
    if model_spec is None:
        model_spec, note = guess_model_spec(target.model)
        notes.append(note)
    hardware = spec.hardware or "local"
    wall_src = _wall_source(model_spec, hardware, spec.weight_precision, notes)
    if hardware == "local" and model_spec:
        ensure_local_hardware(quick=True)
    context = max_model_len(target.models_answer, target.model)
    engine = target.extra_manifest.get("server_engine", {})
    nonce = spec.nonce if spec.nonce is not None else new_nonce()
    slo = spec.slo if not spec.slo.is_empty() else parse_slo("ttft=2000,tpot=100")
    console.print(f"[bold]plan[/] against {escape(target.model)} at {escape(str(spec.url))} · engine "
                  f"{escape(str(engine.get('name', 'unknown')))} · budget {budget_s:.0f} s · SLO "
                  f"{F.slo(slo.model_dump())}")
    for n in notes:
        console.print(f"  [dim]{escape(n)}[/]")
    extra = {"plan": {"kind": "url", "quick": shape is QUICK, "budget_s": budget_s}}
    base = spec.model_copy(update={"model": target.model, "model_spec": model_spec, "hardware": hardware,
                                   "nonce": nonce, "scenario": Scenario.concurrency, "warmup_requests": 0,
                                   "rate": [], "duration": None, **NO_QUALITY})
    quality = {k: getattr(spec, k) for k in NO_QUALITY}  # the quality probes ride in the server step's load only

    steps = PlanSteps(folder, extra, spec=base.public_dict(), server_engine=engine)
    step, children, names = steps.step, steps.children, steps.names

    def step_spec(name: str, **kw: Any) -> RunSpec:
        return RunSpec.model_validate({**base.model_dump(), "out": folder.path / name, **kw})

    # warm-up: connections, weights, compile caches; not recorded
    await run_one(step_spec("warmup", out=None, concurrency=[2], requests=2, input_tokens=64, output_tokens=8),
                  None, extra)
    lengths, why = prefill_lengths(shape, context)
    notes.append(f"prefill sweep {why}")
    console.print(f"[bold]1/3 prefill sweep[/]: TTFT at {', '.join(map(str, lengths))} input tokens ({why})")
    last: tuple[int, float] | None = None  # (tokens, median TTFT s) of the previous prefill step
    for n in lengths:
        if elapsed() > 0.35 * budget_s and names:
            notes.append(f"prefill sweep stopped before {n} tokens: 35% of the time budget spent")
            break
        kw: dict[str, Any] = {}
        if last is not None:
            # a slow engine (vLLM's CPU build on a core without bf16: ~29 ms per prompt token) takes minutes at the
            # context length: expect 1.5× linear in tokens (attention grows faster), skip what the sweep's share of
            # the budget cannot hold, and give the step that long before calling it a stall
            expect = last[1] * n / last[0] * 1.5
            if elapsed() + expect * shape.prefill_repeats > 0.35 * budget_s:
                notes.append(f"prefill sweep stopped before {n} tokens: its TTFT would be about {expect:.0f} s "
                             f"({last[1]:.1f} s at {last[0]} tokens), past 35% of the time budget")
                break
            kw = {"stall_timeout": min(max(spec.stall_timeout, 3 * expect), 86_400.0),
                  "timeout": min(max(spec.timeout, 4 * expect), 86_400.0)}
        r = await step(f"prefill-{n:06d}", step_spec(f"prefill-{n:06d}", scenario=Scenario.single_stream,
                                                     requests=shape.prefill_repeats, input_tokens=n,
                                                     output_tokens=1, seed=n, slo=SLO(), **kw))
        ttft = r.summary.get("median_ttft_ms")
        last = (n, ttft / 1e3) if ttft else last
    console.print("[bold]2/3 decode sweep[/]: concurrency doubled until throughput stops rising or the SLO breaks")
    points: list[dict[str, Any]] = []
    c, stop = 1, None
    while stop is None:
        r = await step(f"decode-c{c}", step_spec(f"decode-c{c}", concurrency=[c],
                                                 requests=max(shape.requests_per_slot * c, 4),
                                                 input_tokens=shape.decode_input, output_tokens=shape.decode_output,
                                                 seed=100 + c, slo=slo))
        cons = r.summary["phasebench"]["slo"]["constraints"]
        points.append({"concurrency": c, "output_throughput": r.summary.get("output_throughput"),
                       "request_throughput": r.summary.get("request_throughput"),
                       "slo_ok": all(x["ok"] for x in cons) if cons else None})
        stop = decode_decision(points, shape.max_concurrency, elapsed() > 0.75 * budget_s)
        c *= 2
    notes.append(f"decode sweep stopped: {stop}")
    console.print(f"  decode sweep stopped: {escape(stop)}")
    ok = [p for p in points if p["slo_ok"] is not False] or points
    best = max(ok, key=lambda p: p["request_throughput"] or 0)
    capacity = best["request_throughput"] or 0.5
    rate = round(max(0.05, CAPACITY_FRACTION * capacity), 3)
    seconds = max(5.0, min(shape.server_seconds, budget_s - elapsed() - 10))
    console.print(f"[bold]3/3 server scenario[/]: Poisson arrivals at {rate}/s ({CAPACITY_FRACTION:.0%} of the "
                  f"{capacity:.2f} req/s measured at concurrency {best['concurrency']}) for {seconds:.0f} s")
    await step("server", step_spec("server", scenario=Scenario.server, rate=[rate], requests=None,
                                   duration=seconds, input_tokens=shape.decode_input,
                                   output_tokens=shape.decode_output, seed=7, slo=slo, **quality))
    summary = plan_summary(children, names, wall_src["probe"], {"model_file": wall_src["model_file"]})
    summary["decode_stop"] = stop
    summary["capacity_step"] = f"decode-c{best['concurrency']}"
    summary["context_length"] = context
    summary["notes"] = notes
    summary["slo"] = slo.model_dump()
    summary["plan_seconds"] = elapsed()
    steps.manifest["target"] = children[0].manifest.get("target") if children else None
    return steps.finish(summary, console)


def _wall_source(model_spec: str | None, hardware: str, weights: str | None, notes: list[str]) -> dict[str, Any]:
    """What the plan summary's memory wall needs, from the named model and hardware (empty when unknown)."""
    from .model.arch import BYTES, load_model
    from .model.errors import ModelError
    from .model.hardware import load_hardware
    from .model.phases import resolve_precision

    empty = {"probe": {}, "model_file": {}}
    if not model_spec:
        return empty
    try:
        m = load_model(model_spec)
        hw = load_hardware(hardware) if hardware != "local" else None
    except ModelError as e:
        raise SpecError(f"--model-spec/--hardware: {e}") from None
    if hw is None:
        from .model.utilization import ensure_local_hardware

        hw = ensure_local_hardware(quick=True)
    prec = weights or ("native" if m.weight_bytes_actual else "bf16")
    try:
        wbytes = m.weight_bytes(prec)
    except (ModelError, KeyError, ValueError):
        raise SpecError(f"--weight-precision {prec}: not a precision phasebench knows "
                        f"({', '.join(k for k in BYTES if k != 'tf32')})") from None
    try:   # the compute precision (a GGUF or int4 weight format computes in bf16/fp16, or fp32 on a CPU)
        act = resolve_precision(hw, "bf16" if prec == "native" else prec)[0].activations
    except ModelError:
        act = "bf16"
    peak, peak_prec = 0.0, None
    for p in (act, "fp32"):
        try:
            peak, peak_prec = hw.peak_flops(p) / 1e9, p
            break
        except ModelError:
            continue
    notes.append(f"memory wall: {m.name} ({prec} weights, {wbytes / 1e9:.2f} GB) on {hw.key} "
                 f"({hw.memory_gbps:.1f} GB/s" + (f", {peak:,.0f} GFLOP/s {peak_prec} peak)" if peak_prec else
                                                  ", no compute peak known)"))
    return {"probe": {"bandwidth_gbps": hw.memory_gbps, "peak_gflops": peak, "peak_precision": peak_prec,
                      "hardware": hw.key},
            "model_file": {"bytes": wbytes, "parameters": m.params, "kv_bytes_per_token": m.kv_bytes_per_token("fp16")}}
