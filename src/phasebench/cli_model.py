"""Commands of the analytic side: ``predict``, ``probe``, ``calibrate``, ``hardware list/show``, ``models list/show``,
``engines list``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import exitcodes
from .cli_common import PANEL_MODEL, fail, out
from .model.errors import ModelError
from .model.fitcheck import MAX_FIT_ERROR

hardware_app = typer.Typer(no_args_is_help=True, help="The hardware catalog: peaks, memory, links, power, prices, sources.")
models_app = typer.Typer(no_args_is_help=True, help="The model catalog: architectures and parameter counts.")
engines_app = typer.Typer(no_args_is_help=True, help="The serving engines --engine names: aliases, corpus coverage.")


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=PANEL_MODEL)(predict)
    app.command(rich_help_panel=PANEL_MODEL)(probe)
    app.command(rich_help_panel=PANEL_MODEL)(calibrate)
    app.add_typer(hardware_app, name="hardware", rich_help_panel=PANEL_MODEL)
    app.add_typer(models_app, name="models", rich_help_panel=PANEL_MODEL)
    app.add_typer(engines_app, name="engines", rich_help_panel=PANEL_MODEL)


def _ints(s: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        fail(f"{what} must be integers separated by commas, got {s!r}")
    if not vals or min(vals) < 1:
        fail(f"{what} must be ≥ 1, got {s!r}")
    return vals


def predict(
    model: str = typer.Option(..., help="Catalog model (phasebench models list), config.json or .gguf."),
    hardware: str = typer.Option(..., help="Catalog hardware (phasebench hardware list) or 'local'."),
    devices: int = typer.Option(1, help="Devices (or racks) serving one replica."),
    tp: int = typer.Option(0, help="Tensor parallel degree (default: devices ÷ pp)."),
    pp: int = typer.Option(1, help="Pipeline parallel degree."),
    precision: str = typer.Option("fp16", help="Weights (and by default activations, KV): fp32 bf16 fp16 fp8 int8 int4, a GGUF format (q8_0 q6_k q5_k_m q5_0 q4_1 q4_k_m q4_0); native = a GGUF file's size."),
    activations: Optional[str] = typer.Option(None, help="Compute precision (default: the weights' if the device has it, else bf16/fp16, else fp32)."),
    kv: Optional[str] = typer.Option(None, help="KV cache precision (default: the weights', fp16 for int4/int8/GGUF formats/native)."),
    batch: str = typer.Option("1", help="Batch size; a list (1,8,64) prints the curve."),
    input_len: str = typer.Option("128", help="Prompt tokens; a list sweeps."),
    output_len: str = typer.Option("128", help="Output tokens; a list sweeps."),
    engine: Optional[str] = typer.Option(None, help="Serving engine: trt-llm, vllm, sglang, tgi, deepspeed, llama.cpp, mlc, "
                                         "neuronx, fastertransformer, ... (aliases such as tensorrt-llm, llamacpp); "
                                         "default: the device's (vllm on GPUs). Its efficiency profile, or your "
                                         "calibration for (hardware, engine) when stored."),
    memory_fraction: Optional[float] = typer.Option(
        None, help="The engine's memory setting (0-1]: vLLM --gpu-memory-utilization, SGLang --mem-fraction-static, "
        "TensorRT-LLM free_gpu_memory_fraction (of the memory the weights leave); default: the engine's own."),
    mem_eff: Optional[float] = typer.Option(None, help="Override: fraction of peak bandwidth achieved."),
    flop_eff: Optional[float] = typer.Option(None, help="Override: fraction of peak FLOP/s the GEMMs achieve (dequantization of weight-only weights included)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Predict TTFT, TPOT, E2E and throughput from the roofline phase model (no server needed)."""
    from dataclasses import replace

    from .model.phases import setup_for, sweep
    from .report.model import print_predictions

    try:
        setup, notes = setup_for(model, hardware, devices, tp, pp, precision, activations, kv, engine, memory_fraction)
        if mem_eff is not None or flop_eff is not None:
            eff = setup.efficiency
            # --flop-eff is the fraction the GEMMs reach, dequantization included: no wq_compute on top of it
            setup = replace(setup, efficiency=replace(eff, memory=mem_eff or eff.memory, compute=flop_eff or eff.compute,
                                                      wq_compute=1.0 if flop_eff else eff.wq_compute,
                                                      source="command line"))
            notes.append("efficiency overridden on the command line: the corpus range no longer applies")
            notes = [n for n in notes if not n.startswith("using calibrated factors")]
        preds = sweep(setup, _ints(batch, "--batch"), _ints(input_len, "--input-len"), _ints(output_len, "--output-len"))
    except ModelError as e:
        fail(str(e))
    for p in preds:
        p.notes[:0] = notes
    if json_out:
        d = [p.to_dict() for p in preds]
        out.print_json(json.dumps(d[0] if len(d) == 1 else d))
    else:
        print_predictions(preds, out)
    if not any(p.timed for p in preds):  # answered, and the answer is "does not fit": not a usage error
        raise typer.Exit(exitcodes.INVALID)


def probe(
    quick: bool = typer.Option(False, help="Fewer repeats (less stable)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Measure this machine's memory wall (bandwidth, matmul FLOP/s) and write the 'local' hardware record."""
    from .model.hardware import load_hardware, nearest
    from .model.probe import probe_and_record
    from .report.model import print_probe

    r, path = probe_and_record(quick=quick)
    if json_out:
        out.print_json(json.dumps(r.to_dict()))
        return
    print_probe(r, load_hardware("local"), nearest(load_hardware("local")), path, out)


def calibrate(
    runs: list[Path] = typer.Argument(..., help="Measured run folders (plans and sweeps count all their points)."),
    dry_run: bool = typer.Option(False, help="Fit and print, do not store."),
    force: bool = typer.Option(False, "--force", help="Store the fit even when its median |error| on its own points "
                               f"is above {MAX_FIT_ERROR:.0%}; it is stored marked as forced and every use says so."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fit efficiency and overhead factors for a (hardware, engine) pair from measured runs; predict uses them.
    A fit whose median |error| on its own points is above the limit is refused unless --force."""
    from .model.calibrate import calibrate as do_calibrate
    from .report.model import print_calibration
    from .results import NotARunError, Run

    try:
        cal = do_calibrate([Run.load(p) for p in runs], save=not dry_run, force=force)
    except (ModelError, NotARunError) as e:
        fail(str(e))
    if json_out:
        out.print_json(json.dumps(cal.to_dict()))
        return
    print_calibration(cal, out, stored=not dry_run)


@hardware_app.command("list")
def hardware_list(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every hardware record with its peaks, memory, price and source."""
    from .model.hardware import catalog
    from .report.model import print_hardware

    try:
        cat = catalog()
    except ModelError as e:
        fail(str(e))
    if json_out:
        out.print_json(json.dumps({k: h.to_dict() for k, h in cat.items()}))
        return
    print_hardware(cat.values(), out)


@hardware_app.command("show")
def hardware_show(name: str, json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """One hardware record in full."""
    from .model.hardware import load_hardware
    from .report.model import print_record

    try:
        h = load_hardware(name)
    except ModelError as e:
        fail(str(e))
    if json_out:
        out.print_json(json.dumps(h.to_dict()))
        return
    print_record(h.to_dict(), out, extra={"ridge point (fp16/bf16 or best)": _ridge(h)})


def _ridge(h) -> str:
    for p in ("bf16", "fp16", "fp32"):
        if h.tflops.get(p):
            return f"{h.ridge_point(p):.0f} FLOP/byte in {p}"
    return "-"


@models_app.command("list")
def models_list(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every catalog model with its parameter count (derived and published) and KV cache per token."""
    from .model.arch import catalog
    from .report.model import models_table

    if json_out:
        out.print_json(json.dumps({k: m.summary() for k, m in catalog().items()}))
        return
    out.print(models_table(catalog().values()))


@engines_app.command("list")
def engines_list(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every engine --engine accepts: its name, aliases, the published rows its profile is fitted on, and the
    devices it is the default for."""
    from rich.markup import escape
    from rich.table import Table

    from .model.engines import listing

    rows = listing()
    if json_out:
        out.print_json(json.dumps(rows))
        return
    t = Table(title="Serving engines (--engine NAME; any alias is accepted)", title_justify="left")
    for c in ("engine", "name", "aliases", "fitted on (corpus rows)", "default for"):
        t.add_column(c, justify="right" if c.startswith("fitted") else "left")
    for e in rows:
        t.add_row(e["engine"], escape(e["name"]), escape(", ".join(e["aliases"])), str(e["corpus_rows"]),
                  ", ".join(e["default_for"]) or "-")
    out.print(t)


@models_app.command("show")
def models_show(name: str, json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """One model (catalog name, config.json or GGUF) in full."""
    from .model.arch import load_model
    from .report.model import print_record

    try:
        m = load_model(name)
    except ModelError as e:
        fail(str(e))
    d = m.summary() | {"kv_bytes_per_token_fp16": m.kv_bytes_per_token("fp16"), "weight_bytes_fp16": m.weight_bytes("fp16")}
    if json_out:
        out.print_json(json.dumps(d))
        return
    print_record(d, out)

