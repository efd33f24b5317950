"""The default plan: what ``phasebench run`` does with no ``--url``.

1. start the embedded llama.cpp engine with N slots on 127.0.0.1 and warm it up;
2. probe this machine's memory wall (the ``local`` hardware record each step's MBU/MFU is measured against);
3. prefill sweep: TTFT against exact input length (server /tokenize), one output token;
4. decode sweep: TPOT and throughput against concurrency 1, 2, 4, 8;
5. a server-scenario (Poisson) run near the measured capacity, with a default SLO: goodput;
then explain where each phase sits, and record the plan in the results database.
Each step is an ordinary run folder under one plan folder; the engine is stopped whatever happens.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from .engine.server import Engine, EngineConfig
from .progress import RichProgress
from .report.plan import print_plan
from .results import Run, RunFolder
from .runner import RunStopped, run_main, run_one
from .spec import RunSpec, Scenario, parse_slo
from .textsafe import markup as escape

DEFAULT_SLO = "ttft=2000,tpot=100"  # the MLPerf llama3.1-8b server thresholds, used as a plain per-request SLO


@dataclass(frozen=True)
class PlanShape:
    prefill_lengths: tuple[int, ...]
    prefill_repeats: int
    decode_concurrency: tuple[int, ...]
    decode_input: int
    decode_output: int
    server_seconds: float
    slots: int


FULL = PlanShape((32, 128, 256, 512, 1024), 2, (1, 2, 4, 8), 64, 64, 30.0, 8)
QUICK = PlanShape((32, 256, 1024), 1, (1, 4), 32, 32, 8.0, 4)


def run_default_plan(quick: bool = False, out: Path | None = None, binary: Path | None = None,
                     model_path: Path | None = None, console: Console | None = None, json_out: bool = False,
                     quality: bool = False) -> Run:
    """The embedded plan; ``quality``: the server step also answers the quality probes under its load."""
    console = console or Console()
    shape = QUICK if quick else FULL
    out = out or Path("runs") / ("plan-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    folder = RunFolder(out)
    eng = Engine(EngineConfig(binary=binary, model_path=model_path, slots=shape.slots), Console(stderr=True))
    eng.resolve()
    console.print(f"[bold]engine[/]: llama-server, {shape.slots} slots · model {escape(str(eng.model_info.get('name')))} "
                  f"({eng.model_info.get('quantization')}, {eng.model_info.get('parameters', 0) / 1e6:.0f} M params)")
    with eng:
        console.print(f"engine healthy at {eng.url}")
        engine_manifest = eng.manifest()
        try:
            result = run_main(_steps(eng, shape, folder, engine_manifest, console, quality))
        except RunStopped as e:
            console.print(f"[yellow]{escape(str(e))}: partial results kept in {escape(str(out))}[/]")
            raise SystemExit(e.exit_code) from e
    if json_out:
        import orjson

        print(orjson.dumps(result.summary, option=orjson.OPT_INDENT_2).decode())
    else:
        print_plan(result, console)
    return result


def _spec(eng: Engine, nonce: str, out: Path, **kw: Any) -> RunSpec:
    """A plan step: seeded for its own prompts, with the plan's fresh nonce (a rerun misses the prompt cache)."""
    return RunSpec(url=eng.url, model=None, tokenizer="server", out=out, timeout=300, nonce=nonce, **kw)


async def _steps(eng: Engine, shape: PlanShape, folder: RunFolder, engine_manifest: dict[str, Any],
                 console: Console, quality: bool = False) -> Run:
    from .model.probe import probe_and_record
    from .workload.synthetic import new_nonce

    nonce = new_nonce()
    extra = {**engine_manifest, "plan": {"quick": shape == QUICK}}
    steps = PlanSteps(folder, extra)
    step, children, names = steps.step, steps.children, steps.names

    console.print("[bold]1/4 memory wall[/]: probing this machine's DRAM bandwidth and matmul FLOP/s "
                  "(the 'local' hardware record every step's MBU/MFU is measured against)")
    pr, _ = probe_and_record(quick=shape == QUICK)
    # warm-up: load weights into the page cache, open the slots
    await run_one(_spec(eng, nonce, None, scenario=Scenario.concurrency, concurrency=[2], requests=2,
                        input_tokens=64, output_tokens=8), None, extra)

    console.print("[bold]2/4 prefill sweep[/]: TTFT against input length, 1 output token")
    for n in shape.prefill_lengths:
        await step(f"prefill-{n:04d}", _spec(eng, nonce, folder.path / f"prefill-{n:04d}", scenario=Scenario.single_stream,
                                             requests=shape.prefill_repeats, input_tokens=n, output_tokens=1,
                                             seed=n))
    console.print("[bold]3/4 decode sweep[/]: TPOT and throughput against concurrency")
    for c in shape.decode_concurrency:
        await step(f"decode-c{c}", _spec(eng, nonce, folder.path / f"decode-c{c}", scenario=Scenario.concurrency,
                                         concurrency=[c], requests=max(4 * c, 3), input_tokens=shape.decode_input,
                                         output_tokens=shape.decode_output, seed=100 + c))
    best = max(children[-len(shape.decode_concurrency):], key=lambda r: r.summary.get("request_throughput") or 0)
    capacity = best.summary.get("request_throughput") or 0.5
    rate = round(max(0.1, 0.7 * capacity), 2)
    console.print(f"[bold]4/4 server scenario[/]: Poisson arrivals at {rate}/s (70% of the measured "
                  f"{capacity:.2f} req/s), SLO {DEFAULT_SLO}" + (", with the quality probes in its load" if quality else ""))
    await step("server", _spec(eng, nonce, folder.path / "server", scenario=Scenario.server, rate=[rate],
                               duration=shape.server_seconds, input_tokens=shape.decode_input,
                               output_tokens=shape.decode_output, slo=parse_slo(DEFAULT_SLO), seed=7,
                               quality=quality))
    summary = plan_summary(children, names, pr.to_dict(), engine_manifest)
    summary["capacity_step"] = best.path.name if best.path else None
    summary["slo"] = parse_slo(DEFAULT_SLO).model_dump()
    steps.manifest["probe"] = pr.to_dict()
    return steps.finish(summary, console)


def plan_manifest(names: list[str], **extra: Any) -> dict[str, Any]:
    """A plan folder's manifest: its kind, version, creation time and its steps (``names``, filled as they run)."""
    from . import __version__

    return {"kind": "plan", "simulated": False, "phasebench_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "children": names, **extra}


class PlanSteps:
    """A plan folder filling step by step, for both plans (embedded engine and any URL). After each step the
    folder's manifest lists the steps done, with a partial summary, so a plan that a signal, a dead server or an
    error stops still reads as a plan (``show``, ``report``, ``import``); ``finish`` writes the real summary.
    ``extra`` goes into every step's manifest and the plan's; ``more`` into the plan's alone."""

    def __init__(self, folder: RunFolder, extra: dict[str, Any], **more: Any) -> None:
        self.folder, self.extra = folder, extra
        self.names: list[str] = []  # the manifest's children: the steps done, in order
        self.children: list[Run] = []
        self.manifest = plan_manifest(self.names, **extra, **more)
        self.progress = RichProgress(Console(stderr=True))

    def save_partial(self, reason: str) -> None:
        self.folder.write_manifest(self.manifest)
        self.folder.write_summary({"steps": list(self.names), "phasebench": {
            "valid": False, "partial": True, "reasons": [reason], "warnings": []}})

    async def step(self, name: str, spec: RunSpec) -> Run:
        try:
            r = await run_one(spec, self.progress, self.extra, label=name)
        except RunStopped as e:
            if e.run is not None:
                self.names.append(name)
                self.children.append(e.run)
            self.save_partial(f"partial: the plan stopped in step {name} ({e})")
            raise
        except BaseException as e:  # the server gone before the step started, a bad answer, a bug: still a plan
            self.save_partial(f"partial: the plan stopped in step {name} ({type(e).__name__}: {e})")
            raise
        self.names.append(name)
        self.children.append(r)
        self.save_partial(f"partial: the plan is still running (done: {', '.join(self.names)})")
        return r

    def finish(self, summary: dict[str, Any], console: Console) -> Run:
        """Write the finished plan's manifest (with this machine's environment) and summary, and record it in
        the results database (a database problem is a warning: the folder is already whole)."""
        from .env import environment
        from .store import record_run

        self.manifest["environment"] = environment()
        self.folder.write_manifest(self.manifest)
        self.folder.write_summary(summary)
        result = Run(self.folder.path, self.manifest, summary, [], self.children)
        _, warning = record_run(result)
        if warning:
            console.print(f"[yellow]warning:[/] {escape(warning)}")
        return result


def _med(run: Run, key: str) -> float | None:
    return getattr(run.result.phasebench.metrics, key).p50  # a misspelled metric raises, never prints '-'


def _server(run: Run, phase: str) -> float | None:
    """The engine's own mean for a phase (server view: Prometheus), where the run has one."""
    v = run.summary.get("phasebench", {}).get("server_view") or {}
    p = (v.get("phases") or {}).get(phase) or (v.get("phases") or {}).get("tpot" if phase == "itl" else "")
    if p and p.get("mean_ms") is not None:
        return p["mean_ms"]
    d = v.get("derived") or {}
    return d.get("prefill_ms_per_request" if phase == "prefill" else "decode_ms_per_token")


def kv_bytes_per_token(mf: dict[str, Any]) -> float:
    """The engine model's KV cache per token in f16 (llama.cpp's default), from its GGUF; 0 if unreadable."""
    from .model.arch import from_gguf
    from .model.errors import ModelError

    try:
        return from_gguf(mf["path"]).kv_bytes_per_token("fp16")
    except (KeyError, ModelError):
        return 0


def plan_summary(children: list[Run], names: list[str], probe: dict[str, Any], engine: dict[str, Any]) -> dict[str, Any]:
    by = dict(zip(names, children))
    prefill = []
    for name, r in by.items():
        if name.startswith("prefill-"):
            prefill.append({"step": name, "input_tokens": int(name.split("-")[1]), "ttft_ms_p50": _med(r, "ttft_ms"),
                            "prefill_tps_p50": _med(r, "prefill_tps"),
                            "server_prompt_ms_p50": r.result.phasebench.server_timing.prompt_ms.p50
                            or _server(r, "prefill")})
    decode = []
    for name, r in by.items():
        if name.startswith("decode-c"):
            decode.append({"concurrency": int(name[len("decode-c"):]), "tpot_ms_p50": _med(r, "tpot_ms"),
                           "itl_token_ms_p50": _med(r, "itl_token_ms"),
                           "output_throughput": r.summary.get("output_throughput"),
                           "server_tpot_ms_p50": r.result.phasebench.server_timing.tpot_ms.p50
                           or _server(r, "itl")})
    server = by.get("server")
    mf = engine.get("model_file", {})
    weight_bytes = mf.get("bytes") or 0
    kvb = mf.get("kv_bytes_per_token") or kv_bytes_per_token(mf)
    wall: dict[str, Any] = {"probe": probe, "weight_bytes": weight_bytes, "kv_bytes_per_token": kvb}
    bw = probe.get("bandwidth_gbps") or 0
    if decode and decode[0]["tpot_ms_p50"] and bw:
        # context during decode at batch 1: input + half the output, on average (as model/utilization.phase_work)
        d1 = decode[0]
        m1 = by[f"decode-c{d1['concurrency']}"].result.phasebench.metrics
        ctx = (m1.input_tokens.mean or 0) + (m1.output_tokens.mean or 0) / 2
        bytes_step = weight_bytes + kvb * ctx
        achieved = bytes_step / (d1["tpot_ms_p50"] / 1000) / 1e9
        wall["decode_bytes_per_step"] = bytes_step
        wall["decode_achieved_gbps"] = achieved
        wall["decode_mbu"] = achieved / bw
    params = mf.get("parameters") or 0
    if prefill and params:  # the MFU is the verdict's (phase_verdicts), against the peak it names
        longest = max(prefill, key=lambda p: p["input_tokens"])
        if longest["prefill_tps_p50"]:
            wall["prefill_achieved_gflops"] = 2 * params * longest["prefill_tps_p50"] / 1e9
    words, figures = phase_verdicts(prefill, decode, wall)
    return {
        "prefill_sweep": prefill,
        "decode_sweep": decode,
        "server": None if server is None else {k: server.summary.get(k) for k in (
            "request_rate", "completed", "failed", "request_throughput", "output_throughput", "median_ttft_ms",
            "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "request_goodput")} | {
            "slo_attainment": server.summary["phasebench"]["slo"]["attainment"], "valid": server.valid},
        "memory_wall": wall,
        "verdicts": words,
        "figures": figures,
        "phasebench": {"valid": all(c.valid for c in children), "partial": False,
                       "reasons": [f"{n}: {r}" for n, c in by.items() for r in c.summary["phasebench"]["reasons"]],
                       "warnings": [f"{n}: {w}" for n, c in by.items() for w in c.summary["phasebench"]["warnings"]]},
    }


def phase_verdicts(prefill: list[dict], decode: list[dict], wall: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The verdicts' words, and the figures they state (``metric``, ``step``, ``fraction``, ``peak``): the one
    decode MBU and prefill MFU of a plan, which its reports show labelled with their step."""
    from .model.verdict import Peak, decode_verdict, prefill_verdict

    out: list[str] = []
    figures: list[dict[str, Any]] = []
    p = wall.get("probe") or {}
    hw = p.get("hardware")   # a plan against a URL names catalog hardware: its datasheet peaks, not a probe's
    bw = Peak((p.get("bandwidth_gbps") or 0) * 1e9,
              f"the {hw} datasheet bandwidth ({p.get('bandwidth_gbps', 0):.1f} GB/s)" if hw else
              f"the probed DRAM bandwidth ({p.get('bandwidth_gbps', 0):.1f} GB/s)")
    bf16 = p.get("matmul_gflops_bf16") or p.get("torch_cpu_bfloat16_gflops")
    if hw:
        peak = p.get("peak_gflops", p.get("matmul_gflops_fp32")) or 0  # older URL-plan folders: the second name
        fl = Peak(peak * 1e9, f"the {hw} datasheet {p.get('peak_precision') or 'compute'} peak ({peak:,.0f} GFLOP/s)")
    elif bf16:
        fl = Peak(bf16 * 1e9, f"the probed bf16 matmul peak ({bf16:,.0f} GFLOP/s, {p.get('bf16_source', 'torch')})")
    else:
        why = p.get("bf16_note") or "no bf16 peak probed"
        fl = Peak((p.get("matmul_gflops_fp32") or 0) * 1e9,
                  f"the probed fp32 matmul peak ({p.get('matmul_gflops_fp32', 0):,.0f} GFLOP/s, numpy BLAS; {why})")
    cores = p.get("threads")
    pf = [x for x in prefill if x.get("prefill_tps_p50")]
    longest = max(pf, key=lambda x: x["input_tokens"]) if pf else None
    # parameters from the prefill figure (2·params·tok/s), for the FLOPs of a decode step
    params = (wall["prefill_achieved_gflops"] * 1e9 / (2 * longest["prefill_tps_p50"])
              if longest and wall.get("prefill_achieved_gflops") else 0.0)
    if "decode_mbu" in wall and decode and decode[0].get("tpot_ms_p50") and bw.value:
        d = decode[0]
        v = decode_verdict(f"decode-c{d['concurrency']}", wall["decode_bytes_per_step"], 2 * params,
                           d["tpot_ms_p50"] / 1e3, bw, fl, cores)
        figures.append({"metric": v.metric, "step": v.step, "fraction": v.fraction, "peak": bw.label})
        out.append(f"{v.text} (each step reads ~{wall['decode_bytes_per_step'] / 1e6:.0f} MB: weights + KV of the "
                   f"prompt; {wall['decode_achieved_gbps']:.1f} GB/s achieved)")
    ok = [d for d in decode if d["output_throughput"] and d["tpot_ms_p50"]]
    if len(ok) >= 2:
        base = ok[0]
        best = max(ok, key=lambda d: d["output_throughput"])
        out.append(
            f"batching to {best['concurrency']} raises decode throughput {best['output_throughput'] / base['output_throughput']:.1f}× "
            f"({base['output_throughput']:.0f} → {best['output_throughput']:.0f} tok/s) at "
            f"{best['tpot_ms_p50'] / base['tpot_ms_p50']:.1f}× the TPOT"
        )
        last = ok[-1]
        if best is not last:
            out.append(f"batching stops paying beyond concurrency {best['concurrency']}: at {last['concurrency']} "
                       f"throughput is {last['output_throughput']:.0f} tok/s")
    if longest and params and fl.value:
        n = longest["input_tokens"]
        ttft = n / longest["prefill_tps_p50"]
        v = prefill_verdict(longest.get("step") or f"prefill-{n:04d}", 2 * params * n, wall.get("weight_bytes", 0) + wall.get("kv_bytes_per_token", 0) * n,
                            ttft, fl, bw, cores)
        figures.append({"metric": v.metric, "step": v.step, "fraction": v.fraction, "peak": fl.label})
        out.append(f"{v.text} ({longest['prefill_tps_p50']:.0f} tok/s at {n} tokens ≈ "
                   f"{wall['prefill_achieved_gflops']:.0f} GFLOP/s as 2·params·tok/s)")
    return out, figures
