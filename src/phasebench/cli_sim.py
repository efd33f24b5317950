"""Commands of the predictive side: ``simulate``, ``profile fit``, ``disagg``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import exitcodes
from .cli_common import PANEL_SIMULATE, fail, out
from .model.errors import ModelError
from .model.fitcheck import MAX_FIT_ERROR
from .spec import Scenario, SpecError
from .textsafe import markup as escape

profile_app = typer.Typer(no_args_is_help=True, help="Phase profiles: iteration cost models fitted to measured runs.")


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=PANEL_SIMULATE)(simulate)
    app.command(rich_help_panel=PANEL_SIMULATE)(disagg)
    app.command(rich_help_panel=PANEL_SIMULATE)(study)
    app.add_typer(profile_app, name="profile", rich_help_panel=PANEL_SIMULATE)


def _setup(model: str, hardware: str, devices: int, precision: str, engine: Optional[str] = None,  # noqa: ANN202
           memory_fraction: Optional[float] = None):
    from .model.phases import setup_for

    return setup_for(model, hardware, devices=devices, precision=precision, engine=engine,
                     memory_fraction=memory_fraction)[0]


def _scheduler(setup, max_seqs: int, max_batched_tokens: int, chunked: bool, block_size: int,
               kv_blocks: Optional[int], static: bool):
    from .sim.run import scheduler_for

    return scheduler_for(setup, max_seqs, max_batched_tokens, chunked, block_size, kv_blocks, static)


def simulate(
    model: Optional[str] = typer.Option(None, help="Catalog model, config.json or GGUF (with --hardware)."),
    hardware: Optional[str] = typer.Option(None, help="Catalog hardware (with --model)."),
    devices: int = typer.Option(1, help="Devices per replica (tensor parallel)."),
    precision: str = typer.Option("fp16", help="Weights precision (see predict)."),
    engine: Optional[str] = typer.Option(None, help="Use the calibration stored for (hardware, engine)."),
    profile: Optional[Path] = typer.Option(None, help="A fitted profile (phasebench profile fit) instead of --model/--hardware."),
    replicas: int = typer.Option(1, help="Identical replicas; requests go round-robin."),
    scenario: Scenario = typer.Option(Scenario.server, help="single-stream | concurrency | server | offline."),
    concurrency: Optional[int] = typer.Option(None, help="Closed-loop slots."),
    rate: Optional[float] = typer.Option(None, help="Requests/s (server)."),
    burstiness: Optional[float] = typer.Option(None, help="Gamma shape: 1 = Poisson."),
    requests: Optional[int] = typer.Option(None, help="Number of requests."),
    duration: Optional[float] = typer.Option(None, help="Seconds of arrivals (server)."),
    input_tokens: Optional[str] = typer.Option(None, help="N or N:stddev."),
    output_tokens: Optional[str] = typer.Option(None, help="N or N:stddev."),
    preset: Optional[str] = typer.Option(None, help="Use case: chat, code, rag, summarize."),
    trace: Optional[Path] = typer.Option(None, help="Trace to replay: Mooncake JSONL, Azure CSV or plain JSONL (t, input_tokens, output_tokens)."),
    trace_speed: float = typer.Option(1.0, help="Trace time scale: 2 replays twice as fast."),
    trace_window: Optional[str] = typer.Option(None, help="A:B seconds of the trace to replay."),
    turns: str | None = typer.Option(None, help="Multi-turn conversations: N or N:stddev turns each; a turn's "
                                                   "prompt is the history + --input-tokens new tokens."),
    think_time: str | None = typer.Option(None, help="Seconds (S or S:stddev) from an answer to the next turn."),
    warmup: Optional[float] = typer.Option(None, help="Seconds at the start excluded from metrics."),
    cooldown: Optional[float] = typer.Option(None, help="Seconds at the end excluded from metrics."),
    slo: Optional[str] = typer.Option(None, help="ttft=..,tpot=.. or an MLPerf preset."),
    seed: Optional[int] = typer.Option(None, help="Seed."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/sim-<time>)."),
    max_seqs: int = typer.Option(256, help="Scheduler: max running sequences."),
    max_batched_tokens: int = typer.Option(8192, help="Scheduler: token budget per iteration."),
    chunked_prefill: bool = typer.Option(True, "--chunked-prefill/--no-chunked-prefill", help="Chunked prefill."),
    static_batching: bool = typer.Option(False, help="Static batching (the baseline continuous batching beats)."),
    block_size: int = typer.Option(16, help="KV block size (tokens)."),
    kv_blocks: Optional[int] = typer.Option(None, help="KV blocks (default: what the device memory leaves)."),
    memory_fraction: Optional[float] = typer.Option(
        None, help="The engine's memory setting (0-1], as predict's: sizes the KV blocks the memory leaves."),
    prefix_cache: bool = typer.Option(True, "--prefix-cache/--no-prefix-cache",
                                      help="Trace replay and --turns: reuse the cached prompt blocks the requests "
                                           "share (LRU, in free KV)."),
    summary_only: bool = typer.Option(False, "--summary-only",
                                      help="Write manifest and summary only (no requests.jsonl): the fast mode."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json."),
) -> None:
    """Simulate serving (continuous batching, KV cache, preemption) and write the same run folder as `run`."""
    import datetime as dt

    from .cli_common import print_result
    from .sim.profile import FittedProfile
    from .sim.replica import NeverFits
    from .sim.run import analytic_profile, simulate_run
    from .spec import build_spec

    try:
        if profile is None and not (model and hardware):
            fail("give --model and --hardware, or --profile")
        setup = _setup(model, hardware, devices, precision, engine, memory_fraction) if model and hardware else None
        prof = FittedProfile.load(profile) if profile else analytic_profile(setup, engine)
        cfg = _scheduler(setup, max_seqs, max_batched_tokens, chunked_prefill, block_size, kv_blocks, static_batching)
        cfg.prefix_cache = prefix_cache
        spec = build_spec(None, url="http://simulated.invalid/v1", scenario=scenario,
                          concurrency=str(concurrency) if concurrency else None, rate=str(rate) if rate is not None else ("1" if trace else None),  # a trace has its own arrivals
                          burstiness=burstiness, requests=requests, duration=duration, input_tokens=input_tokens,
                          output_tokens=output_tokens, preset=preset, slo=slo, seed=seed, warmup=warmup, cooldown=cooldown,
                          turns=turns, think_time=think_time,
                          out=out_dir or Path("runs") / f"sim-{dt.datetime.now():%Y%m%d-%H%M%S}",
                          model_spec=model, hardware=hardware, devices=devices * replicas)
        # keep_records=False: what is printed comes from the summary; records are built only for the database
        result = simulate_run(spec, prof, cfg, replicas=replicas, trace=trace, summary_only=summary_only,
                              trace_speed=trace_speed, trace_window=trace_window, keep_records=False)
    except (ModelError, SpecError, NeverFits, FileExistsError, ValueError) as e:
        fail(str(e))
    print_result(result, json_out)
    sim = result.manifest["simulation"]
    if not json_out:
        out.print(f"simulated {sim['requests']} requests, {sim['iterations']} iterations, {sim['preemptions']} preemptions "
                  f"in {sim['cpu_s']:.2f} CPU-s ({sim['requests'] / max(sim['cpu_s'], 1e-9):,.0f} requests per CPU-second)")
    if sim["over_capacity"] or not result.valid:  # finished, written, and INVALID: the documented code
        raise typer.Exit(exitcodes.INVALID)


@profile_app.command("fit")
def profile_fit(
    runs: list[Path] = typer.Argument(..., help="Measured run folders (plans and sweeps count all their steps)."),
    output: Path = typer.Option(Path("profile.json"), "-o", "--output", help="Where to write the profile."),
    force: bool = typer.Option(False, "--force", help="Write the profile even when its median |error| on its own "
                               f"points is above {MAX_FIT_ERROR:.0%}; it is marked as forced and simulate says so."),
) -> None:
    """Fit prefill = a + b·Σn + c·Σn² and decode = a + b·Σctx + c·batch to measured runs; print the error.
    A fit whose median |error| on its own points is above the limit is refused unless --force."""
    from .results import NotARunError, Run
    from .sim.profile import fit_profile

    try:
        p = fit_profile([Run.load(r) for r in runs])
        p.save(output, force=force)
    except (ModelError, NotARunError) as e:
        fail(str(e))
    a, b, c = p.prefill
    out.print(f"prefill: {a * 1e3:.3f} ms + {b * 1e3:.4f} ms/token + {c * 1e6:.5f} µs/token²  "
              f"({p.points['prefill']} points, median |error| {p.error['prefill_median_abs']:.1%}, mean "
              f"{p.error['prefill_mean_abs']:.1%}, max {p.error['prefill_max_abs']:.1%})")
    a, b, c = p.decode
    out.print(f"decode : {a * 1e3:.3f} ms + {b * 1e6:.4f} µs/context token + {c * 1e3:.4f} ms/sequence  "
              f"({p.points['decode']} points, median |error| {p.error['decode_median_abs']:.1%}, mean "
              f"{p.error['decode_mean_abs']:.1%}, max {p.error['decode_max_abs']:.1%})")
    for w in [*p.warnings, *filter(None, [p.forced_note()])]:
        out.print(f"[yellow]warning:[/] {escape(w)}")
    out.print(f"wrote {escape(str(output))}")


def disagg(
    model: str = typer.Option(..., help="Catalog model."),
    prefill: str = typer.Option(..., help="Prefill pool hardware."),
    decode: str = typer.Option(..., help="Decode pool hardware."),
    network: str = typer.Option("100gbe", help="nvlink, 400g-ib, 200g-ib, 100gbe, 25gbe, 10gbe, or 'GB/s[,latency_us]'."),
    colocated: Optional[str] = typer.Option(None, help="Colocated baseline hardware (default: the prefill hardware)."),
    prefill_devices: int = typer.Option(1, help="Devices per prefill replica."),
    decode_devices: int = typer.Option(1, help="Devices (or racks) per decode replica."),
    prefill_replicas: int = typer.Option(1, help="Prefill replicas."),
    decode_replicas: int = typer.Option(1, help="Decode replicas."),
    precision: str = typer.Option("fp16", help="Weights precision on both sides."),
    decode_kv: Optional[str] = typer.Option(None, help="KV precision on the decode side (the cache is converted in flight)."),
    overlap: bool = typer.Option(False, help="Send the KV cache layer by layer, overlapped with prefill."),
    input_tokens: int = typer.Option(512, help="Prompt tokens."),
    output_tokens: int = typer.Option(128, help="Output tokens."),
    rate: Optional[float] = typer.Option(None, help="Requests/s: also simulate both deployments under Poisson load."),
    requests: int = typer.Option(500, help="Requests to simulate with --rate (conversations with --turns)."),
    turns: str | None = typer.Option(None, help="With --rate: conversations of N (or N:stddev) turns, each turn "
                                                "--input-tokens new tokens after the history; the decode side "
                                                "does not receive the history it holds."),
    think_time: str | None = typer.Option(None, help="With --turns: seconds (S or S:stddev) from an answer to the "
                                                     "next turn."),
    cached_tokens: int = typer.Option(0, help="The one-request analysis: prompt tokens whose KV the decode side "
                                              "already holds (not shipped)."),
    slo: str = typer.Option("ttft=2000,tpot=100", help="SLO for goodput and the pool ratio."),
    sweep_inputs: str = typer.Option("128,512,2048,8192", help="Input lengths of the break-even sweep."),
    sweep_gbps: str = typer.Option("1.25,12.5,50,450", help="Link bandwidths (GB/s) of the sweep."),
    engine: Optional[str] = typer.Option(None, help="Engine efficiency profile on both sides."),
    gain: bool = typer.Option(True, "--gain/--no-gain",
                              help="Simulate the gain under Poisson load over bandwidth × input length and request rate."),
    gain_requests: int = typer.Option(100, help="Requests per simulation of the gain table."),
    gain_load: float = typer.Option(0.8, help="Load of the bandwidth × input grid, as a fraction of the analytic capacity."),
    gain_out: Optional[Path] = typer.Option(None, "--gain-out", help="Folder for gain.json, gain.csv and the gain plots."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Colocated vs prefill/decode disaggregated serving, across platforms and networks; break-even bandwidth."""
    from dataclasses import replace

    from .model.phases import Precision
    from .report.sim import print_disagg
    from .sim import disagg as D
    from .sim.replica import NeverFits
    from .spec import build_spec, parse_slo

    try:
        link = D.parse_network(network)
        ps = _setup(model, prefill, prefill_devices, precision, engine)
        ds = _setup(model, decode, decode_devices, precision, engine)
        if decode_kv:
            ds = replace(ds, precision=Precision(ds.precision.weights, ds.precision.activations, decode_kv))
        cs = _setup(model, colocated or prefill, prefill_devices, precision, engine)
        point = D.analytic_point(ps, ds, cs, link, input_tokens, output_tokens, overlap=overlap,
                                 cached_tokens=cached_tokens)
        inputs = [int(x) for x in sweep_inputs.split(",") if x.strip()]
        bws = [float(x) for x in sweep_gbps.split(",") if x.strip()]
        if any(b <= 0 for b in bws):
            raise ModelError("sweep bandwidths must be > 0")
        grid = D.sweep(ps, ds, cs, inputs, bws, output_tokens, link.latency_s, overlap)
        s = parse_slo(slo)
        ratio = D.pool_ratio(ps, ds, input_tokens, output_tokens, s.tpot_ms)
        sims = None
        if rate is not None:
            if rate <= 0:
                raise ModelError("--rate must be > 0")
            spec = build_spec(None, url="http://simulated.invalid/v1", scenario=Scenario.server, rate=str(rate),
                              requests=requests, input_tokens=str(input_tokens), output_tokens=str(output_tokens), slo=slo,
                              turns=turns, think_time=think_time)
            sims = D.side_by_side(spec, ps, ds, cs, link, prefill_replicas, decode_replicas,
                                  prefill_replicas + decode_replicas,
                                  lambda st: _scheduler(st, 256, 8192, True, 16, None, False), overlap)
        table = None
        if gain:
            from .sim.gain import GainStudy
            from .sim.run import analytic_profile, scheduler_for

            if gain_requests < 10:
                raise ModelError("--gain-requests must be ≥ 10")
            gs = GainStudy(lambda st: analytic_profile(st, engine), scheduler_for, s, output_tokens=output_tokens,
                           requests=gain_requests, prefill_replicas=prefill_replicas, decode_replicas=decode_replicas,
                           overlap=overlap)
            table = gs.table(ps, ds, inputs, bws, load=gain_load, ref_input=input_tokens, latency_s=link.latency_s)
        files = []
        if table is not None and gain_out is not None:
            from .report.study import write_gain

            files = write_gain(table, gain_out)
    except (ModelError, SpecError, NeverFits, ValueError, OSError) as e:
        fail(str(e))
    if json_out:
        d = {"point": point.to_dict(), "sweep": grid, "pool_ratio": ratio, "network": link.__dict__}
        if table is not None:
            d["gain"] = table.to_dict()
        if sims:
            d["simulated"] = {k: {kk: v.get(kk) for kk in ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms",
                                                             "p99_tpot_ms", "median_e2el_ms", "request_goodput",
                                                             "output_throughput")} for k, v in sims.items()}
            for k, v in sims.items():
                for kk in ("kv_transfer", "turn_arrivals"):
                    if kk in v["phasebench"]:
                        d["simulated"][k][kk] = v["phasebench"][kk]
        out.print_json(json.dumps(d, default=str))
        return
    print_disagg(model, ps, ds, cs, link, point, grid, ratio, sims, out)
    if table is not None:
        from .report.study import print_gain

        print_gain(table, out)
    for f in files:
        out.print(f"wrote {escape(str(f))}")


def study(
    model: str = typer.Option("llama-2-7b", help="Catalog model."),
    platforms: str = typer.Option(",".join(("a100-80gb-sxm", "h100-sxm", "mi300x", "gaudi2", "groq-rack", "inferentia2",
                                            "local")),
                                  help="Comma-separated hardware; 'local' is skipped when no local record exists "
                                       "(unless named explicitly)."),
    engine: Optional[str] = typer.Option(None, help="Engine efficiency profile (default: the model's default)."),
    precision: str = typer.Option("fp16", help="Weights precision."),
    input_tokens: int = typer.Option(512, help="Reference input length (decode curves, winners)."),
    output_tokens: int = typer.Option(128, help="Output tokens."),
    slo: str = typer.Option("ttft=1000,tpot=50", help="SLO for goodput, cost at the SLO and peak decode throughput."),
    pairs: Optional[str] = typer.Option(None, help="Prefill:decode pairs to simulate, e.g. 'h100-sxm:groq-rack' "
                                                    "(default: every ordered pair of distinct platforms)."),
    requests: int = typer.Option(60, help="Requests per simulation of the disaggregation gain (bounds the time)."),
    runs: Optional[Path] = typer.Option(None, "--runs", help="A plan run folder with the local platform's measured points "
                                                             "(default: the results database's latest plan)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for study.html, study.md, PNGs, CSVs and study.json."),
) -> None:
    """The phase-aware cross-platform study: prefill and decode per platform, winners per chip/watt/dollar,
    the crossover batch, and the disaggregation gain under load for every platform pair (all predicted)."""
    import time

    from .report.study import print_study, write_study
    from .sim.replica import NeverFits
    from .spec import parse_slo
    from .study import DEFAULT_PLATFORMS, run_study

    t0 = time.perf_counter()
    try:
        names = [p.strip() for p in platforms.split(",") if p.strip()]
        explicit = names != list(DEFAULT_PLATFORMS)
        pair_list = None
        if pairs:
            pair_list = []
            for item in pairs.split(","):
                a, sep, b = item.strip().partition(":")
                if not sep or not a or not b:
                    raise ModelError(f"--pairs item {item!r}: write prefill:decode, e.g. h100-sxm:groq-rack")
                pair_list.append((a, b))
        if requests < 10:
            raise ModelError("--requests must be ≥ 10")
        st = run_study(model, names if explicit else None, engine=engine, precision=precision, input_len=input_tokens,
                       output_len=output_tokens, slo=parse_slo(slo), runs_dir=runs, pairs=pair_list, requests=requests)
        files = write_study(st, out_dir)
    except (ModelError, SpecError, NeverFits, ValueError, OSError) as e:
        fail(str(e))
    print_study(st, out)
    out.print(f"wrote {escape(str(out_dir / 'study.html'))}, study.md and {len(files) - 2} more files "
              f"in {time.perf_counter() - t0:.1f} s")
