"""The ``phasebench`` command line: one small function per command, no logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .exitcodes import HELP as EXIT_HELP
from .spec import Endpoint, Scenario, SpecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="phasebench: how fast an LLM really runs on your hardware and serving stack, phase by phase "
    "(prefill = time to first token, decode = time per output token), and why.",
    epilog=EXIT_HELP,
)
engine_app = typer.Typer(no_args_is_help=True, help="The embedded llama.cpp engine: build, start, stop, status.")
app.add_typer(engine_app, name="engine")

# not a terminal (CI logs, pipes): wide enough that tables keep whole numbers instead of folding them
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def fail(msg: str, code: int = 2) -> None:
    """One line on stderr (outside text in ``msg`` is made terminal-safe), then exit with ``code``."""
    from .textsafe import markup

    err.print(f"[red]error:[/] {markup(msg)}", soft_wrap=True)
    raise typer.Exit(code)


def warn(msg: str) -> None:
    from .textsafe import markup

    err.print(f"[yellow]warning:[/] {markup(msg)}", soft_wrap=True)


def _user_errors():
    from .engine.errors import EngineError
    from .model.errors import ModelError
    from .results import NotARunError
    from .runner import RunError

    return (SpecError, RunError, NotARunError, FileExistsError, EngineError, ModelError)


@app.command()
def run(
    url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL (…/v1). Omit to start the embedded engine."),
    model: Optional[str] = typer.Option(None, help="Model name to request (default: the first of /v1/models)."),
    endpoint: Optional[Endpoint] = typer.Option(None, help="completions or chat."),
    scenario: Optional[Scenario] = typer.Option(None, help="single-stream | concurrency | server | offline | sweep | trace."),
    concurrency: Optional[str] = typer.Option(None, help="Closed-loop slots; a list (1,2,4) for a sweep."),
    rate: Optional[str] = typer.Option(None, help="Requests/s for 'server'; a list for a sweep."),
    burstiness: Optional[float] = typer.Option(None, help="Gamma shape of arrivals: 1 = Poisson, <1 burstier."),
    requests: Optional[int] = typer.Option(None, help="Number of requests (per sweep point)."),
    duration: Optional[float] = typer.Option(None, help="Seconds to keep sending (with or instead of --requests)."),
    input_tokens: Optional[str] = typer.Option(None, help="Prompt length: N or N:stddev."),
    output_tokens: Optional[str] = typer.Option(None, help="Output length: N or N:stddev."),
    preset: Optional[str] = typer.Option(None, help="Use case: chat, code, rag, summarize."),
    dataset: Optional[Path] = typer.Option(None, help="Prompts from a .jsonl or ShareGPT .json file."),
    tokenizer: Optional[str] = typer.Option(None, help="tokenizer.json path, 'server' (/tokenize) or 'approx'."),
    slo: Optional[str] = typer.Option(None, help="ttft=2000,tpot=200[,e2e=..,itl=..,p=99] or an MLPerf preset."),
    warmup: Optional[float] = typer.Option(None, help="Seconds at the start excluded from metrics."),
    cooldown: Optional[float] = typer.Option(None, help="Seconds at the end excluded from metrics."),
    warmup_requests: Optional[int] = typer.Option(None, help="Requests of the run's shape sent and discarded first (default: one short request per connection)."),
    seed: Optional[int] = typer.Option(None, help="Seed for prompts and arrivals."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run folder to write (default runs/<time>)."),
    api_key_env: Optional[str] = typer.Option(None, help="Name of the env var holding the API key."),
    exact_output: Optional[bool] = typer.Option(None, "--exact-output/--no-exact-output", help="Force exact output length."),
    timeout: Optional[float] = typer.Option(None, help="Per-request timeout (s)."),
    stall_timeout: Optional[float] = typer.Option(None, help="Max seconds between two reads of a stream."),
    model_spec: Optional[str] = typer.Option(None, help="Catalog model or config.json/GGUF, for MBU/MFU."),
    hardware: Optional[str] = typer.Option(None, help="Catalog hardware for MBU/MFU (default: local)."),
    weight_precision: Optional[str] = typer.Option(None, help="Weights' precision for MBU: fp16, fp8, int4… (default fp16)."),
    devices: Optional[int] = typer.Option(None, help="Devices behind the target (cost per token)."),
    price_per_hour: Optional[float] = typer.Option(None, help="USD per device-hour (default: the catalog's)."),
    mlperf: Optional[bool] = typer.Option(None, "--mlperf/--no-mlperf", help="Apply MLPerf validity rules."),
    metrics_url: Optional[str] = typer.Option(None, help="Engine's Prometheus endpoint (default <server>/metrics; 'off')."),
    prefix_tokens: Optional[int] = typer.Option(None, help="Shared-prefix workload: tokens every prompt of a group shares."),
    prefix_groups: Optional[int] = typer.Option(None, help="Shared-prefix workload: number of distinct prefixes."),
    plan: bool = typer.Option(False, "--plan", help="With --url: the phase-aware plan (prefill, decode, server)."),
    plan_budget: Optional[str] = typer.Option(None, help="Time bound of --plan, e.g. 10m, 600s (default 10m)."),
    quality: Optional[bool] = typer.Option(None, "--quality/--no-quality", help="Mix the quality probes into the load and score them (docs/quality.md)."),
    quality_alone: Optional[bool] = typer.Option(None, "--quality-alone", help="Also send the probes alone after the load."),
    quality_set: Optional[Path] = typer.Option(None, help="Your own probe set (JSONL); implies --quality."),
    quality_ref: Optional[Path] = typer.Option(None, help="Reference from `phasebench quality reference`; implies --quality."),
    quality_threshold: Optional[float] = typer.Option(None, help="Pass if the score is >= this x the reference's (default 0.99)."),
    spec_file: Optional[Path] = typer.Option(None, "--spec", help="YAML spec; flags override it."),
    quick: bool = typer.Option(False, help="Embedded engine plan: the < 1 minute version."),
    engine_binary: Optional[Path] = typer.Option(None, help="Embedded engine: your own llama-server binary."),
    engine_model: Optional[Path] = typer.Option(None, help="Embedded engine: any GGUF model file."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json instead of tables."),
    workers: Optional[str] = typer.Option(None, help="Client worker processes: N or auto (default: one per spare core when the load needs it)."),
    ray: Optional[str] = typer.Option(None, help="Run the client workers as Ray actors: auto or a cluster ADDRESS (extra phasebench[ray])."),
    transport: Optional[str] = typer.Option(None, help="auto (raw sockets with kernel receive timestamps for http:// on Linux), raw or aiohttp."),
    trace: Optional[Path] = typer.Option(None, help="Replay a recorded trace at its timestamps: Mooncake JSONL, Azure CSV or plain JSONL."),
    trace_speed: Optional[float] = typer.Option(None, help="Trace time scale: 2 replays twice as fast."),
    trace_window: Optional[str] = typer.Option(None, help="A:B seconds of the trace to replay."),
    turns: Optional[str] = typer.Option(None, help="Multi-turn conversations: N or N:stddev turns each (--requests counts conversations)."),
    think_time: Optional[str] = typer.Option(None, help="Seconds between an answer and the next turn: S or S:stddev."),
    max_event_bytes: Optional[int] = typer.Option(None, help="A streamed event larger than this fails its request (default 4 MiB)."),
) -> None:
    """Benchmark a server (or, with no --url, the embedded engine) and write a run folder.

    Exit codes: 0 finished and VALID · 2 bad input, nothing run · 3 finished but INVALID · 4 server unreachable
    or gone mid-run (partial results kept) · 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM) · 1 internal error.
    """
    from . import exitcodes
    from .runner import RunStopped, TargetUnreachable, run_main
    from .spec import build_spec

    try:
        if url is None and not (spec_file and _spec_has_url(spec_file)):
            from .plan import run_default_plan

            if quality_alone or quality_set or quality_ref:
                raise SpecError("--quality-alone/--quality-set/--quality-ref need --url (the embedded plan takes "
                                "--quality: its server step answers the shipped probes under load)")

            result = run_default_plan(
                quick=quick, out=out_dir, binary=engine_binary, model_path=engine_model, console=out, json_out=json_out,
                quality=bool(quality),
            )
            raise typer.Exit(exitcodes.OK if result is None or result.valid else exitcodes.INVALID)
        spec = build_spec(
            spec_file, url=url, model=model, endpoint=endpoint, scenario=scenario, concurrency=concurrency,
            rate=rate, burstiness=burstiness, requests=requests, duration=duration, input_tokens=input_tokens,
            output_tokens=output_tokens, preset=preset, dataset=dataset, tokenizer=tokenizer, slo=slo,
            warmup=warmup, cooldown=cooldown, warmup_requests=warmup_requests, seed=seed, out=out_dir,
            api_key_env=api_key_env, exact_output=exact_output, timeout=timeout, stall_timeout=stall_timeout,
            model_spec=model_spec, hardware=hardware, weight_precision=weight_precision, devices=devices, price_per_hour=price_per_hour,
            mlperf=mlperf, workers=_workers(workers), ray=ray, transport=transport,
            max_event_bytes=max_event_bytes,
            metrics_url=metrics_url, prefix_tokens=prefix_tokens, prefix_groups=prefix_groups,
            quality=quality, quality_alone=quality_alone, quality_set=quality_set, quality_ref=quality_ref,
            quality_threshold=quality_threshold,
            trace=trace, trace_speed=trace_speed, trace_window=trace_window, turns=turns, think_time=think_time,
        )
        if plan:
            from .plan_any import run_url_plan

            run_url_plan(spec, quick=quick, budget=plan_budget, console=out, json_out=json_out)
            return
        if spec.out is None:
            spec = spec.model_copy(update={"out": default_out()})
        from .progress import RichProgress
        from .runner import run_async

        try:
            result = run_main(run_async(spec, RichProgress()))
        except RunStopped as e:
            if e.run is None:
                err.print(f"[yellow]stopped ({_stop_name(e)}) before the run started; nothing written as a result[/]")
            else:
                _print(e.run, json_out)
                err.print(f"[yellow]{escape_text(str(e)) if not _is_signal(e) else 'interrupted (' + _stop_name(e) + ')'}: "
                          f"partial results kept in {e.run.path}[/]")
            raise typer.Exit(e.exit_code)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted before the run started; nothing written as a result[/]")
            raise typer.Exit(exitcodes.for_signal(2))
        _print(result, json_out)
        if not result.valid:
            raise typer.Exit(exitcodes.INVALID)
    except TargetUnreachable as e:
        fail(str(e), exitcodes.SERVER_GONE)
    except _user_errors() as e:
        fail(str(e))


def _workers(value: str | None) -> int | None:
    if value is None or value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise SpecError(f"--workers {value!r}: use a whole number from 1 to 256, or auto") from None
    if not 1 <= n <= 256:
        raise SpecError(f"--workers {n}: use a whole number from 1 to 256, or auto")
    return n


def _is_signal(e: Exception) -> bool:
    from .runner import Interrupted

    return isinstance(e, Interrupted)


def _stop_name(e: Exception) -> str:
    return getattr(e, "signal_name", "stopped")


def escape_text(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _spec_has_url(path: Path) -> bool:
    from .spec import load_spec_file

    try:
        return bool(load_spec_file(path).get("url"))
    except SpecError:
        return True  # let build_spec report the problem


def default_out() -> Path:
    import datetime as dt

    return Path("runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _print(result, json_out: bool) -> None:
    if json_out:
        import orjson

        sys.stdout.write(orjson.dumps(result.summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    from .report.terminal import print_run

    print_run(result, out)


@app.command()
def show(
    path: Path = typer.Argument(..., help="A run folder."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json."),
    mlperf: bool = typer.Option(False, "--mlperf", help="Print an mlperf_log_summary-like text with the rules checked."),
) -> None:
    """Print a run's summary again: the tables the run printed at its end (a run, sweep, plan, simulated run, or a
    `phasebench study --out` folder)."""
    from .results import MANIFEST, Run

    try:
        if not (path / MANIFEST).is_file() and (path / "study.json").is_file():
            _show_study(path, json_out)
            return
        run = Run.load(path)
        if mlperf or json_out:
            for w in run.load_warnings:
                warn(w)
        if mlperf:
            from .report.mlperf import summary_text
            from .textsafe import clean

            for leaf in (run.children or [run]):
                sys.stdout.write(clean(summary_text(leaf), multiline=True))
            return
        _print(run, json_out)
    except _user_errors() as e:
        fail(str(e))


def _show_study(path: Path, json_out: bool) -> None:
    """A study folder: the summary `phasebench study` printed, from its study.json."""
    from .report.study import print_study
    from .study import STUDY_FILE, load_study

    try:
        st = load_study(path)
    except ValueError as e:
        fail(str(e))
    if json_out:
        sys.stdout.write((path / STUDY_FILE).read_text(encoding="utf-8"))
        return
    print_study(st, out)


@app.command("mock-server")
def mock_server(
    port: int = typer.Option(8000, help="Port on 127.0.0.1 (0 = any free port)."),
    ttft_ms: float = typer.Option(20.0, help="Base time to first token (ms)."),
    ttft_per_input_token_ms: float = typer.Option(0.0, help="Extra TTFT per prompt token (ms)."),
    itl_ms: float = typer.Option(10.0, help="Gap between chunks (ms)."),
    itl_jitter_ms: float = typer.Option(0.0, help="Uniform jitter on each gap (± ms)."),
    tokens_per_chunk: int = typer.Option(1, help="Tokens in each streamed chunk."),
    fault: str = typer.Option("none", help="none|500|429|malformed|drop|stall|error_event."),
    fault_every: int = typer.Option(0, help="Every Nth request gets the fault."),
    model: str = typer.Option("mock-model", help="Model name it serves."),
) -> None:
    """A programmable OpenAI-compatible test server that streams on a known schedule."""
    import socket

    from .mock_server import main as mock_main

    if not 0 <= port <= 65535:
        fail(f"--port {port}: use 0 (any free port) to 65535")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself will
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            fail(f"--port {port}: cannot listen on 127.0.0.1:{port} ({e.strerror}); pick another port, or 0 for a free one")
    try:
        mock_main([
            "--port", str(port), "--ttft-ms", str(ttft_ms), "--ttft-per-input-token-ms", str(ttft_per_input_token_ms),
            "--itl-ms", str(itl_ms), "--itl-jitter-ms", str(itl_jitter_ms), "--tokens-per-chunk", str(tokens_per_chunk),
            "--fault", fault, "--fault-every", str(fault_every), "--model", model,
        ])
    except OSError as e:  # taken between the check and the server's own bind
        fail(f"--port {port}: cannot listen on 127.0.0.1:{port} ({e.strerror or e}); pick another port, or 0 for a free one")


@app.command()
def selftest(
    streams: str = typer.Option("1,64,256", help="Concurrent streams to try."),
    seconds: float = typer.Option(4.0, help="Seconds per point."),
) -> None:
    """Measure this client's own ceiling here: chunks/s held, CPU per chunk, timestamp error."""
    from .selftest import print_selftest

    print_selftest([int(s) for s in streams.split(",") if s.strip()], seconds, out)


# ---- embedded engine ---------------------------------------------------------------------------------


@engine_app.command("build")
def engine_build(force: bool = typer.Option(False, help="Rebuild even if a cached build exists.")) -> None:
    """Build llama.cpp's llama-server and llama-quantize (one build) from the llama-cpp-python source on PyPI (cached)."""
    from .engine.build import build_engine

    try:
        server, quantize = build_engine(force=force, console=err)
        out.print(f"llama-server: {server}\nllama-quantize: {quantize}")
    except _user_errors() as e:
        fail(str(e))


@engine_app.command("start")
def engine_start(
    kind: str = typer.Option("llama.cpp", help="llama.cpp, vllm or sglang."),
    port: int = typer.Option(0, help="Port on 127.0.0.1 (0 = a free one)."),
    slots: int = typer.Option(8, help="llama.cpp: parallel slots (continuous batching)."),
    ctx: int = typer.Option(0, help="llama.cpp: context size in tokens (0 = 2048 per slot)."),
    binary: Optional[Path] = typer.Option(None, help="llama.cpp: your own llama-server binary."),
    model_path: Optional[Path] = typer.Option(None, "--model", help="llama.cpp: a GGUF (default SmolLM2-135M); vllm/sglang: a Hugging Face folder."),
    name: Optional[str] = typer.Option(None, help="vllm/sglang: served model name (default: the folder's name)."),
    engine_args: Optional[str] = typer.Option(None, help='Extra engine flags, one string: "--max-model-len 2048 --dtype bfloat16".'),
    python: Optional[Path] = typer.Option(None, help="vllm/sglang: the Python that has the engine installed."),
) -> None:
    """Start an engine in the background on 127.0.0.1; prints its URL (use it with `phasebench run --url`)."""
    from .engine.kinds import kind as engine_kind
    from .engine.kinds import split_args
    from .engine.server import start_detached

    try:
        if kind.lower() in ("llama.cpp", "llamacpp", "llama-cpp"):
            info = start_detached(port=port, slots=slots, ctx=ctx, binary=binary, model_path=model_path, console=err)
        else:
            from .engine.process import start_detached_kind

            if model_path is None:
                fail(f"--kind {kind} needs --model DIR (a Hugging Face model folder)")
            info = start_detached_kind(engine_kind(kind), str(model_path), name, port, split_args(engine_args),
                                       python, err)
        out.print(f"engine running: {info['url']}  (pid {info['pid']}, model {info['model']})")
    except _user_errors() as e:
        fail(str(e))


@engine_app.command("stop")
def engine_stop() -> None:
    """Stop the background engine started by `phasebench engine start`."""
    from .engine.server import stop_detached

    out.print(stop_detached())


@engine_app.command("status")
def engine_status() -> None:
    """Is the background engine running, and where?"""
    from .engine.server import status_detached

    out.print(status_detached())


def _exit_with(msg: str, code: int) -> None:
    try:
        fail(msg, code)
    except typer.Exit:
        sys.exit(code)


def _click_errors() -> tuple[type, type, type]:
    """The usage-error classes of the click that typer runs on (typer >= 0.24 vendors its own copy)."""
    try:
        from typer._click import exceptions as ex
    except ImportError:
        import click.exceptions as ex  # type: ignore[no-redef]
    no_args = getattr(ex, "NoArgsIsHelpError", None) or type("NoArgsIsHelpErrorUnused", (Exception,), {})
    return ex.UsageError, no_args, ex.ClickException


def main() -> None:
    from . import cli_model, cli_quality, cli_results, cli_sim

    cli_model.register(app)  # predict, probe, calibrate, hardware, models
    cli_results.register(app)  # history, import, export, compare, report
    cli_sim.register(app)  # simulate, disagg, profile fit
    cli_quality.register(app)  # quality reference/show, quant

    usage_error, no_args, click_error = _click_errors()
    try:
        rc = app(standalone_mode=False)
    except no_args as e:  # bare `phasebench` / `phasebench engine`: the help text
        ctx = getattr(e, "ctx", None)
        sys.stdout.write((ctx.get_help() + "\n") if ctx is not None else "")
        sys.exit(0)
    except usage_error as e:  # a bad flag or value, in one line naming it (not a traceback or a box)
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "phasebench"
        _exit_with(f"{' '.join(e.format_message().split())} (see `{where} --help`)", 2)
    except (KeyboardInterrupt, typer.Abort):
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except click_error as e:
        _exit_with(" ".join(e.format_message().split()), getattr(e, "exit_code", 1))
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
