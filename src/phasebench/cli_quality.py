"""Commands of the quality guard: ``quality reference``, ``quality show``, ``quant`` (registered on the main app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from .cli_common import PANEL_QUALITY, fail, out, user_errors
from .report.fmt import num as _n
from .textsafe import markup as escape

quality_app = typer.Typer(no_args_is_help=True, help="Quality probes: references, scores (docs/quality.md).")


def register(app: typer.Typer) -> None:
    app.add_typer(quality_app, name="quality", rich_help_panel=PANEL_QUALITY)
    app.command(rich_help_panel=PANEL_QUALITY)(quant)


@quality_app.command("reference")
def reference(
    run: Path = typer.Argument(..., help="A run folder made with --quality."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the reference (REF.json)."),
) -> None:
    """Store a run's scored probe answers as the reference for `run --quality-ref REF.json`."""
    from .quality import reference_from_run
    from .results import Run

    try:
        ref = reference_from_run(Run.load(run))
        ref.save(output)
    except user_errors() as e:
        fail(str(e))
    out.print(f"reference: {len(ref.items)} probes, score {ref.score if ref.score is not None else 'n/a'} → {output}")


@quality_app.command("show")
def show(
    run: Path = typer.Argument(..., help="A run folder made with --quality."),
    json_out: bool = typer.Option(False, "--json", help="Print the quality block as JSON."),
) -> None:
    """Each probe's answer and score, the health checks, and the agreement with the reference."""
    from .results import Run

    try:
        r = Run.load(run)
    except user_errors() as e:
        fail(str(e))
    blocks = [(leaf.path, (leaf.summary.get("phasebench") or {}).get("quality")) for leaf in r.leaves()]
    blocks = [(p, b) for p, b in blocks if b]
    if not blocks:
        fail(f"{run}: no quality block (run it with --quality)")
    if json_out:
        out.print_json(json.dumps(blocks[0][1] if len(blocks) == 1 else [b for _, b in blocks]))
        return
    for path, b in blocks:
        print_block(b, str(path))


def print_block(b: dict[str, Any], title: str) -> None:
    t = Table(title=f"quality probes: {escape(title)}", title_justify="left")
    for c in ("probe", "kind", "method", "score", "answer"):
        t.add_column(c, justify="right" if c == "score" else "left", overflow="fold")
    for it in b["items"]:
        t.add_row(escape(it["id"]), it["kind"], it["method"], f"{it['score']:.2f}", escape(repr((it.get("text") or "")[:60])))
    out.print(t)
    out.print(f"score {_n(b.get('score'), 3)} (generate {_n(b.get('score_generate'), 3)}, choice {_n(b.get('score_choice'), 3)}), "
              f"exact match {_n(b.get('exact_match'), 3)}, {b['answered']}/{b['probes']} answered; "
              f"not in the speed figures")
    ref = b.get("reference")
    if ref:
        out.print(f"vs reference {escape(str(ref['reference']))}: exact {_n(ref.get('exact_match'), 3)}, token agreement "
                  f"{_n(ref.get('token_agreement'), 3)}, ROUGE-L {_n(ref.get('rouge_l'), 3)}, Δ log-likelihood "
                  f"{_n(ref.get('loglik_delta'), 3)}; {'PASS' if ref['passed'] else 'FAIL'} (needs {_n(ref.get('required_score'), 3)})")
    for r in b.get("reasons", []):
        out.print(f"[red]INVALID[/] {escape(r)}")


def quant(
    engine_model: Optional[Path] = typer.Option(None, help="The GGUF to requantize (default: SmolLM2-135M Q4_1 from PyPI)."),
    types: str = typer.Option("Q4_1,Q3_K_S,Q2_K", help="llama-quantize types, e.g. Q4_1,Q3_K_S,Q2_K (the source's own type is used as is)."),
    gemma: bool = typer.Option(False, "--gemma", help="Also Gemma-3-270M Q4_K_M from PyPI (a bigger model, if installed)."),
    quality_set: Optional[Path] = typer.Option(None, help="Your own probe set (JSONL)."),
    quick: bool = typer.Option(False, help="Fewer, shorter requests per step (for a check)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/quant-<time>)."),
    json_out: bool = typer.Option(False, "--json", help="Print quant.json."),
) -> None:
    """Speed against quality, measured: lower-bit variants of a GGUF on the embedded engine, one table and a plot."""
    import datetime as dt

    from .engine.locate import find_model
    from .quality.quant import parse_types, run_quant
    from .runner import RunStopped

    try:
        tlist = parse_types(types)
        model = find_model(engine_model)
        dest = out_dir or Path("runs") / ("quant-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
        summary = run_quant(model, tlist, dest, quick=quick, gemma=gemma, probe_set=quality_set,
                            log=lambda m: out.print(escape(m)))
    except RunStopped as e:
        fail(f"quant stopped ({getattr(e, 'signal_name', e)}); the finished steps are kept in {dest}", e.exit_code)
    except user_errors() as e:
        fail(str(e))
    if json_out:
        out.print_json(json.dumps(summary))
        return
    print_quant(summary, dest)


def print_quant(s: dict[str, Any], dest: Path) -> None:
    top = max((v["top_concurrency"] for v in s["variants"]), default=0)
    t = Table(title=f"quantization: speed against quality (reference {escape(s['reference'])})", title_justify="left")
    for c in ("variant", "weight MB", "decode tok/s b1", f"decode tok/s c{top}", "MBU b1", "prefill tok/s",
              "quality", "exact", "agree (ROUGE-L)", "agree (tokens)", "Δ loglik"):
        t.add_column(c, justify="left" if c == "variant" else "right")
    for v in s["variants"]:
        ag = v.get("agreement") or {}
        wb = v.get("weight_bytes") or v["file_bytes"]
        q = _n(v.get("quality"), 3) + ("" if v.get("quality_valid") in (True, None) else " [red]INVALID[/]")
        t.add_row(escape(v["name"]), _n(wb / 1e6), _n(v.get("decode_tok_s_b1")), _n(v.get("decode_tok_s_top")),
                  _n(v["mbu"] * 100, 0) + "%" if v.get("mbu") is not None else "–", _n(v.get("prefill_tok_s")), q,
                  _n(v.get("exact_match"), 2), _n(ag.get("rouge_l"), 3), _n(ag.get("token_agreement"), 3),
                  _n(ag.get("loglik_delta"), 3))
    out.print(t)
    for v in s["variants"]:
        for n in v.get("notes", []):
            out.print(f"[dim]{escape(v['name'])}:[/] {escape(n)}")
    for w in s.get("warnings", []):
        out.print(f"[yellow]warning:[/] {escape(w)}")
    out.print(f"every number measured on this machine; runs, quant.json{' and quant.png' if s.get('plot') else ''} in {escape(str(dest))}")
