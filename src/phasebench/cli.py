"""The ``phasebench`` command line: one small function per command, no logic of its own.

The shared helpers (consoles, one-line errors, the user-error types) live in ``cli_common``; the other
``cli_*`` modules import only that, and ``main`` registers their commands here (no import cycle)."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from . import __version__
from .cli_common import (
    PANEL_ENGINE,
    PANEL_MEASURE,
    PANEL_RESULTS,
    err,
    fail,
    out,
    print_result,
    user_errors,
    warn,
)
from .exitcodes import HELP as EXIT_HELP
from .spec import Endpoint, RunSpec, Scenario, SpecError

EXAMPLES = """Examples:

  phasebench run --quick   (no --url: the embedded engine's plan, < 1 min)

  phasebench run --url http://127.0.0.1:8000/v1 --concurrency 8

  phasebench run --url URL --scenario server --rate 4 --duration 120

  phasebench history --tag gpu=h100

  phasebench compare RUN_A RUN_B   ·   phasebench report RUN

  phasebench predict --model llama-3.1-8b --hardware h100-sxm

"""
RUN_EXAMPLES = """Examples:

  phasebench run --url http://127.0.0.1:8000/v1 --concurrency 8 --tag gpu=h100

  phasebench run --url URL --scenario sweep --rate 1,2,4,8 --duration 60

  phasebench run --url URL --slo ttft=2000,tpot=200 --scenario server --rate 4

  phasebench run --url URL --header 'X-Tenant: bench' --api-key-env MY_KEY

  phasebench run --url URL --temperature 0.7 --extra-body '{"top_p": 0.9}'

  phasebench run --url URL --plan --hardware h100-sxm --model-spec llama-3-8b

"""

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="phasebench: how fast an LLM really runs on your hardware and serving stack, phase by phase "
    "(prefill = time to first token, decode = time per output token), and why.",
    epilog=EXAMPLES + EXIT_HELP,
)
engine_app = typer.Typer(no_args_is_help=True, help="The embedded llama.cpp engine: build, start, stop, status.")


def _version(value: bool) -> None:
    if value:
        out.print(f"phasebench {__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _app(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print phasebench's version and exit."),
) -> None:
    pass


# ---- run: its flags, grouped into help panels, each default shown as RunSpec has it -------------------

P_TARGET = "Target"
P_LOAD = "Load"
P_WORKLOAD = "Workload and requests"
P_SLO = "SLO and validity"
P_HW = "Model and hardware (MBU/MFU, cost)"
P_QUALITY = "Quality"
P_SCALE = "Transport and scale"
P_PLAN = "Plan and embedded engine"
P_OUTPUT = "Output"

_DEFAULTS = RunSpec()


def spec_default(field: str, negatable: bool = True) -> str | bool:
    """How ``--help`` shows RunSpec's default for ``field`` (False: none to show). A bool shows the flag that
    gives it (``exact-output``, ``no-mlperf``); one without a ``--no-`` form shows nothing when off."""
    from enum import Enum

    value: Any = getattr(_DEFAULTS, field)
    if isinstance(value, bool):
        name = field.replace("_", "-")
        return name if value else ("no-" + name if negatable else False)
    if value is None or value == [] or value == {}:
        return False
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    if field == "slo":
        return False if value.is_empty() else str(value)
    if field == "think_time":
        return f"{value.mean:g}" if not value.stddev else f"{value.mean:g}:{value.stddev:g}"
    return str(value)


def opt(field: str, panel: str, help: str, *decls: str, **kw: Any) -> Any:
    """A ``run`` option for RunSpec ``field``: None when not given (a --spec file's value stands), its
    default as RunSpec has it shown in --help."""
    shown = spec_default(field, negatable=any("/" in d for d in decls))
    return typer.Option(None, *decls, help=help, rich_help_panel=panel, show_default=shown, **kw)


@app.command(rich_help_panel=PANEL_MEASURE, epilog=RUN_EXAMPLES + EXIT_HELP)
def run(
    url: Optional[str] = opt("url", P_TARGET, "OpenAI-compatible base URL (…/v1). Omit to start the embedded engine."),
    model: Optional[str] = opt("model", P_TARGET, "Model name to request (default: the first of /v1/models)."),
    endpoint: Optional[Endpoint] = opt("endpoint", P_TARGET, "completions or chat."),
    api_key_env: Optional[str] = opt("api_key_env", P_TARGET, "Name of the env var holding the API key.", metavar="VAR"),
    header: list[str] | None = opt(
        "headers", P_TARGET, "Extra HTTP header 'Name: value' on every request (repeatable). Values are secrets: "
        "scrubbed from stored text; the manifest keeps the names only.", metavar="'K: V'"),
    metrics_url: Optional[str] = opt("metrics_url", P_TARGET, "Engine's Prometheus endpoint (default <server>/metrics; 'off')."),
    spec_file: Optional[Path] = typer.Option(None, "--spec", help="YAML spec; flags override it.", rich_help_panel=P_TARGET),
    scenario: Optional[Scenario] = opt("scenario", P_LOAD, "single-stream | concurrency | server | offline | sweep | trace.",
                                       metavar="SCENARIO"),
    concurrency: Optional[str] = opt("concurrency", P_LOAD, "Closed-loop slots; a list (1,2,4) for a sweep."),
    rate: Optional[str] = opt("rate", P_LOAD, "Requests/s for 'server'; a list for a sweep."),
    burstiness: Optional[float] = opt("burstiness", P_LOAD, "Gamma shape of arrivals: 1 = Poisson, <1 burstier."),
    requests: Optional[int] = opt(
        "requests", P_LOAD, f"Number of requests (per sweep point; single-stream: "
        f"{RunSpec(scenario=Scenario.single_stream).requests})."),
    duration: Optional[float] = opt("duration", P_LOAD, "Seconds to keep sending (with or instead of --requests)."),
    warmup: Optional[float] = opt("warmup", P_LOAD, "Seconds at the start excluded from metrics."),
    cooldown: Optional[float] = opt("cooldown", P_LOAD, "Seconds at the end excluded from metrics."),
    warmup_requests: Optional[int] = opt("warmup_requests", P_LOAD, "Requests of the run's shape sent and discarded first "
                                         "(default: one short request per connection)."),
    trace: Optional[Path] = opt("trace", P_LOAD, "Replay a recorded trace at its timestamps: Mooncake JSONL, Azure CSV "
                                "or plain JSONL."),
    trace_speed: Optional[float] = opt("trace_speed", P_LOAD, "Trace time scale: 2 replays twice as fast."),
    trace_window: Optional[str] = opt("trace_window", P_LOAD, "A:B seconds of the trace to replay."),
    turns: Optional[str] = opt("turns", P_LOAD, "Multi-turn conversations: N or N:stddev turns each (--requests counts "
                               "conversations)."),
    think_time: Optional[str] = opt("think_time", P_LOAD, "Seconds between an answer and the next turn: S or S:stddev."),
    input_tokens: Optional[str] = opt("input_tokens", P_WORKLOAD, "Prompt length: N or N:stddev."),
    output_tokens: Optional[str] = opt("output_tokens", P_WORKLOAD, "Output length: N or N:stddev."),
    preset: Optional[str] = opt("preset", P_WORKLOAD, "Use case: chat, code, rag, summarize."),
    dataset: Optional[Path] = opt("dataset", P_WORKLOAD, "Prompts from a .jsonl or ShareGPT .json file."),
    tokenizer: Optional[str] = opt("tokenizer", P_WORKLOAD, "tokenizer.json path, 'server' (/tokenize) or 'approx'."),
    prefix_tokens: Optional[int] = opt("prefix_tokens", P_WORKLOAD, "Shared-prefix workload: tokens every prompt of a "
                                       "group shares."),
    prefix_groups: Optional[int] = opt("prefix_groups", P_WORKLOAD, "Shared-prefix workload: number of distinct prefixes."),
    seed: Optional[int] = opt("seed", P_WORKLOAD, "Seed for prompts and arrivals."),
    exact_output: Optional[bool] = opt("exact_output", P_WORKLOAD, "Force exact output length.",
                                       "--exact-output/--no-exact-output"),
    temperature: float | None = opt("temperature", P_WORKLOAD, "Sampling temperature sent in each request (quality "
                                       "probes stay greedy)."),
    extra_body: str | None = opt("extra_body", P_WORKLOAD, "A JSON object merged into every request body, e.g. "
                                    "'{\"top_p\": 0.9}'.", metavar="JSON"),
    slo: Optional[str] = opt(
        "slo", P_SLO, "Per-request objectives in ms: ttft=2000,tpot=200 (also e2e=, itl=, and p=99 for the "
        "percentile), or an MLPerf preset such as mlperf-llama2-70b-server.", metavar="SLO"),
    mlperf: Optional[bool] = opt("mlperf", P_SLO, "Apply MLPerf validity rules.", "--mlperf/--no-mlperf"),
    model_spec: Optional[str] = opt("model_spec", P_HW, "Catalog model or config.json/GGUF, for MBU/MFU."),
    hardware: Optional[str] = opt("hardware", P_HW, "Catalog hardware for MBU/MFU (default: local)."),
    weight_precision: Optional[str] = opt("weight_precision", P_HW, "Weights' precision for MBU: fp16, fp8, int4… "
                                          "(default fp16)."),
    devices: Optional[int] = opt("devices", P_HW, "Devices behind the target (cost per token)."),
    price_per_hour: Optional[float] = opt("price_per_hour", P_HW, "USD per device-hour (default: the catalog's)."),
    quality: Optional[bool] = opt("quality", P_QUALITY, "Mix the quality probes into the load and score them "
                                  "(docs/quality.md).", "--quality/--no-quality"),
    quality_alone: Optional[bool] = opt("quality_alone", P_QUALITY, "Also send the probes alone after the load.",
                                        "--quality-alone"),
    quality_set: Optional[Path] = opt("quality_set", P_QUALITY, "Your own probe set (JSONL); implies --quality."),
    quality_ref: Optional[Path] = opt("quality_ref", P_QUALITY, "Reference from `phasebench quality reference`; implies "
                                      "--quality."),
    quality_threshold: Optional[float] = opt("quality_threshold", P_QUALITY, "Pass if the score is >= this x the "
                                             "reference's."),
    transport: Optional[str] = opt("transport", P_SCALE, "auto (raw sockets with kernel receive timestamps for http:// "
                                   "on Linux), raw or aiohttp."),
    workers: Optional[str] = typer.Option(None, help="Client worker processes: N or auto (default: one per spare core "
                                          "when the load needs it).", rich_help_panel=P_SCALE),
    ray: Optional[str] = opt("ray", P_SCALE, "Run the client workers as Ray actors: auto or a cluster ADDRESS (extra "
                             "phasebench\\[ray])."),
    timeout: Optional[float] = opt("timeout", P_SCALE, "Per-request timeout (s)."),
    stall_timeout: Optional[float] = opt("stall_timeout", P_SCALE, "Max seconds between two reads of a stream."),
    max_event_bytes: Optional[int] = opt("max_event_bytes", P_SCALE, "A streamed event larger than this fails its request."),
    plan: bool = typer.Option(False, "--plan", help="With --url: the phase-aware plan (prefill, decode, server).",
                              rich_help_panel=P_PLAN),
    plan_budget: Optional[str] = typer.Option(None, help="Time bound of --plan, e.g. 10m, 600s (default 10m; 3m "
                                              "with --quick).",
                                              rich_help_panel=P_PLAN),
    quick: bool = typer.Option(False, help="The short plan: embedded engine < 1 minute; with --url --plan, 3 minutes.",
                               rich_help_panel=P_PLAN),
    engine_binary: Optional[Path] = typer.Option(None, help="Embedded engine: your own llama-server binary.",
                                                 rich_help_panel=P_PLAN),
    engine_model: Optional[Path] = typer.Option(None, help="Embedded engine: any GGUF model file.", rich_help_panel=P_PLAN),
    out_dir: Optional[Path] = opt("out", P_OUTPUT, "Run folder to write (default runs/<time>).", "--out"),
    tag: list[str] | None = opt("tags", P_OUTPUT, "Label the run key=value (repeatable): stored in the manifest and "
                                   "the results database; `history --tag` filters on it.", metavar="K=V"),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json instead of tables.", rich_help_panel=P_OUTPUT),
) -> None:
    """Benchmark a server (or, with no --url, the embedded engine) and write a run folder (exit codes below)."""
    from . import exitcodes
    from .runner import RunStopped, TargetUnreachable, run_main
    from .spec import build_spec
    from .textsafe import markup

    def named(pairs: tuple[tuple[str, object], ...]) -> str:
        return "/".join(f for f, v in pairs if v not in (None, False, [], ""))

    # what a plan decides itself (load, prompts): a flag that would be ignored is an error, not a surprise
    shaping = named((("--scenario", scenario), ("--concurrency", concurrency), ("--rate", rate),
                     ("--requests", requests), ("--duration", duration), ("--input-tokens", input_tokens),
                     ("--output-tokens", output_tokens), ("--preset", preset), ("--dataset", dataset),
                     ("--trace", trace), ("--turns", turns), ("--prefix-tokens", prefix_tokens)))
    console = err if json_out else out  # --json: stdout holds the JSON alone, the progress lines go to stderr
    try:
        if url is None and not (spec_file and _spec_has_url(spec_file)):
            from .plan import run_default_plan

            if quality_alone or quality_set or quality_ref:
                raise SpecError("--quality-alone/--quality-set/--quality-ref need --url (the embedded plan takes "
                                "--quality: its server step answers the shipped probes under load)")
            given = named((("--tag", tag), ("--header", header), ("--temperature", temperature),
                           ("--extra-body", extra_body), ("--plan-budget", plan_budget)))
            given = "/".join(x for x in (given, shaping) if x)
            if given:
                verb = "needs" if "/" not in given else "need"
                raise SpecError(f"{given} {verb} --url (the embedded engine's plan shapes its own requests and load)")

            result = run_default_plan(
                quick=quick, out=out_dir, binary=engine_binary, model_path=engine_model, console=console,
                json_out=json_out, quality=bool(quality),
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
            temperature=temperature, extra_body=extra_body, headers=header or None, tags=tag or None,
        )
        engine_flags = named((("--engine-binary", engine_binary), ("--engine-model", engine_model)))
        if engine_flags:
            raise SpecError(f"{engine_flags}: for the embedded engine (no --url); a server at --url runs its own model")
        if not plan and (plan_budget or quick):
            raise SpecError(f"{named((('--plan-budget', plan_budget), ('--quick', quick)))} with --url need --plan")
        if plan:
            from .plan_any import run_url_plan

            if shaping:
                raise SpecError(f"--plan shapes its own load and prompts (a prefill sweep, a decode sweep, a server "
                                f"step): drop {shaping}, or run without --plan")
            result = run_url_plan(spec, quick=quick, budget=plan_budget, console=console, json_out=json_out)
            raise typer.Exit(exitcodes.OK if result.valid else exitcodes.INVALID)  # the exit code tells the truth
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
                print_result(e.run, json_out)
                err.print(f"[yellow]{markup(str(e)) if not _is_signal(e) else 'interrupted (' + _stop_name(e) + ')'}: "
                          f"partial results kept in {markup(str(e.run.path))}[/]")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted before the run started; nothing written as a result[/]")
            raise typer.Exit(exitcodes.for_signal(2)) from None
        print_result(result, json_out)
        if not result.valid:
            raise typer.Exit(exitcodes.INVALID)
    except TargetUnreachable as e:
        fail(str(e), exitcodes.SERVER_GONE)
    except user_errors() as e:
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


def _spec_has_url(path: Path) -> bool:
    from .spec import load_spec_file

    try:
        return bool(load_spec_file(path).get("url"))
    except SpecError:
        return True  # let build_spec report the problem


def default_out() -> Path:
    import datetime as dt

    return Path("runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")


@app.command(rich_help_panel=PANEL_RESULTS)
def show(
    path: Path = typer.Argument(..., help="A run, sweep, plan, simulated-run or study folder."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json (study.json for a study)."),
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
        print_result(run, json_out)
    except user_errors() as e:
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


@app.command(rich_help_panel=PANEL_MEASURE)
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
    except user_errors() as e:
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
    except user_errors() as e:
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
    try:
        _main()
    finally:
        # the process ends here: the interpreter's last collections would walk every object the command leaves
        # (modules, schemas, catalogs: tens of thousands) to find what reference counting frees anyway as the
        # modules are torn down; frozen, they are skipped (~0.1 CPU-s of a simulation's process,
        # benchmarks/simulator_speed.py). Nothing runs after this but the exit.
        gc.freeze()


def _main() -> None:
    from . import cli_model, cli_quality, cli_results, cli_sim

    cli_model.register(app)  # predict, probe, calibrate, hardware, models
    cli_results.register(app)  # history, import, export, compare, report
    cli_sim.register(app)  # simulate, disagg, profile fit
    cli_quality.register(app)  # quality reference/show, quant
    app.add_typer(engine_app, name="engine", rich_help_panel=PANEL_ENGINE)  # last: the panels keep this order
    app.command("mock-server", rich_help_panel=PANEL_ENGINE)(mock_server)

    usage_error, no_args, click_error = _click_errors()
    try:
        rc = app(prog_name="phasebench", standalone_mode=False)
    except no_args as e:  # bare `phasebench` / `phasebench engine`: the help text
        text = e.format_message()  # ctx.get_help(): rich mode has printed it already and returns ""
        sys.stdout.write(text + "\n" if text.strip() else "")
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
