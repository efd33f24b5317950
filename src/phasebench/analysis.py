"""The summary of a run, assembled after its records by small analysis steps, in one ordered list (``STEPS``).

Each step is a plain function of the typed run context (:class:`RunAnalysis`: manifest, records, spec, the
summary so far) that returns its own block (or :data:`SKIP`); the list says where each block goes in
``summary.json``. A step that fails becomes a warning in the summary, never a lost run. Measured runs
(``runner.run_one``) and simulated ones (``sim.run.simulate_run``) both go through :func:`analyse`, and both
write their folder through :func:`write_run` (``manifest.json``, ``summary.json``, ``mlperf_log_summary.txt``).
"""

from __future__ import annotations

import datetime as dt
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .metrics import RunContext, summarize
from .records import RequestRecord
from .spec import RunSpec

if TYPE_CHECKING:
    from .quality.block import QualityOptions
    from .results import RunFolder
    from .serverview.scrape import Scraper
    from .sim.columns import Columns
    from .workload import Prompt


@dataclass
class Measured:
    """What only a measured run knows: its prompts, tokenizer, server, warm-up, scraper, quality probes."""

    prompts: Sequence[Prompt]
    tokenizer: str
    models_answer: Any
    model: str
    warmup_requests: int
    warmup_kind: str  # "connections" (the default short requests) or "requests" (--warmup-requests N)
    scraper: Scraper | None = None
    quality: QualityOptions | None = None
    probe_records: Sequence[RequestRecord] = ()
    alone: Sequence[RequestRecord] | None = None


@dataclass
class Simulated:
    """What only a simulated run knows: its requests as arrays, whether it went over capacity, its hardware."""

    columns: Columns
    over_capacity: bool
    hardware: str | None
    devices: int


@dataclass
class RunAnalysis:
    """The typed run context every step reads; ``summary`` is the summary so far (steps before this one)."""

    manifest: dict[str, Any]
    records: Sequence[RequestRecord]  # the load's records (quality probes apart); empty for a summary-only simulation
    spec: RunSpec
    metrics: RunContext
    measured: Measured | None = None
    simulated: Simulated | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def phasebench(self) -> dict[str, Any]:
        return self.summary.setdefault("phasebench", {})


@dataclass
class Block:
    """A step's result when it has more to say than its block: warnings, and validity reasons (any reason makes
    the run invalid)."""

    value: Any = None
    warnings: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    reasons_first: bool = False  # its reasons are the cause of the others: listed before them


SKIP = object()  # a step that does not apply to this run: its key is left out
SUMMARY = "(the summary)"  # the step's block is the summary itself (the metrics step)
TOP = "(top level)"  # the step's block is merged into the summary's top level (vLLM's keys)


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[RunAnalysis], Any]
    key: str | None  # where the block goes: SUMMARY, TOP, a key of summary["phasebench"], or None (warnings only)
    decides_validity: bool = False  # its verdict is part of VALID: if it fails, the run cannot be called valid


# ---- the steps ----------------------------------------------------------------------------------------


def metrics_step(a: RunAnalysis) -> dict[str, Any]:
    """Every metric, the measurement window, goodput, the honesty checks (``metrics.summarize``); a simulated run's
    from its arrays (``sim.columns.summarize_columns``, tested equal)."""
    if a.simulated is not None:
        from .sim.columns import summarize_columns

        return summarize_columns(a.simulated.columns, a.metrics)
    return summarize(a.records, a.metrics)


def capacity_step(a: RunAnalysis) -> Any:
    """A simulation whose queue grew without bound is not a result."""
    if a.simulated is None or not a.simulated.over_capacity:
        return SKIP
    return Block(reasons=["over capacity: the simulated queue grew without bound and the run was stopped"],
                 reasons_first=True)


def vllm_step(a: RunAnalysis) -> dict[str, Any]:
    """The keys ``vllm bench serve --save-result`` writes besides the metrics it shares (docs/formats.md)."""
    created = a.manifest.get("created")
    when = dt.datetime.fromisoformat(created) if isinstance(created, str) else dt.datetime.now(dt.UTC)
    backend = ("simulated" if a.simulated is not None else
               "openai-chat" if a.spec.endpoint.value == "chat" else "openai")
    m = a.measured
    return {
        "date": when.strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": backend,
        "backend": backend,
        "model_id": m.model if m else (a.manifest.get("target") or {}).get("model"),
        "tokenizer_id": m.tokenizer if m else None,
        "num_prompts": len(a.simulated.columns) if a.simulated is not None else len(a.records),
        # vLLM: the rate asked for, "inf" when everything is sent at once (closed loop, offline)
        "request_rate": a.metrics.target_rate if a.metrics.target_rate is not None else "inf",
        # vLLM records its --burstiness (default 1.0) whatever the rate; so does phasebench
        "burstiness": a.spec.burstiness,
        "max_concurrency": a.metrics.concurrency,
    }


def warmup_step(a: RunAnalysis) -> Any:
    m = a.measured
    if m is None:
        return SKIP
    n = m.warmup_requests
    return {
        "requests": n,
        "kind": m.warmup_kind,
        "note": (f"{n} short requests (8 prompt tokens, 2 output) opened the connections before the window"
                 if m.warmup_kind == "connections" else f"{n} requests of the run's shape were sent and discarded"),
    }


def quality_step(a: RunAnalysis) -> Any:
    """The quality probes scored (``--quality``); an invalid quality block makes the run invalid."""
    m = a.measured
    if m is None or m.quality is None:
        return SKIP
    from .quality import quality_block

    block = quality_block(m.quality, m.probe_records, m.alone)
    return Block(block, warnings=list(block["warnings"]), reasons=[] if block["valid"] else list(block["reasons"]))


def roofline_step(a: RunAnalysis) -> Any:
    """MBU/MFU and the predicted phases of a measured run (``model.utilization``)."""
    if a.measured is None:
        return SKIP
    from .model.errors import ModelError
    from .model.utilization import utilization

    try:
        return utilization(a.manifest, a.summary)
    except (ModelError, OSError, ValueError, ZeroDivisionError) as e:
        return {"error": f"roofline not computed: {e}"}


def server_view_step(a: RunAnalysis) -> Any:
    """The engine's own Prometheus metrics, differenced over the run (``serverview``)."""
    if a.measured is None:
        return SKIP
    from .serverview.session import server_view

    view, warnings = server_view(a.measured.scraper, a.spec, a.records, a.summary)
    return Block(view, warnings=warnings)


def server_checks_step(a: RunAnalysis) -> Any:
    """Did the server see what was asked: prompt lengths, context length, its error messages."""
    m = a.measured
    if m is None:
        return SKIP
    from .server_checks import server_saw

    return Block(warnings=server_saw(a.records, m.prompts, m.tokenizer, m.models_answer, m.model))


def cost_step(a: RunAnalysis) -> Any:
    """$/1M tokens, energy (``cost.cost_block``); needs the roofline's verdict for a measured run on 'local'."""
    from .cost import cost_block

    if a.simulated is not None:
        return cost_block(a.simulated.hardware, a.simulated.devices, a.summary)
    hw = a.spec.hardware or ("local" if a.phasebench.get("roofline") else None)
    return cost_block(hw, a.spec.devices, a.summary, a.spec.price_per_hour)


STEPS: tuple[Step, ...] = (
    Step("metrics", metrics_step, SUMMARY),
    Step("capacity", capacity_step, None, decides_validity=True),
    Step("vllm keys", vllm_step, TOP),
    Step("warm-up", warmup_step, "warmup"),
    Step("quality", quality_step, "quality", decides_validity=True),
    Step("roofline", roofline_step, "roofline"),
    Step("server view", server_view_step, "server_view"),
    Step("server checks", server_checks_step, None),
    Step("cost", cost_step, "cost"),
)


# ---- running them -------------------------------------------------------------------------------------


def _skeleton() -> dict[str, Any]:
    """The summary before any step: not valid until the metrics step says otherwise."""
    return {"phasebench": {"valid": False, "partial": False, "reasons": ["no metrics were computed"], "warnings": []}}


def _place(a: RunAnalysis, step: Step, out: Any) -> None:
    block = out if isinstance(out, Block) else Block(out)
    if step.key == SUMMARY:
        a.summary.clear()
        a.summary.update(block.value)
    elif step.key == TOP:
        a.summary.update(block.value or {})
    elif step.key is not None:
        a.phasebench[step.key] = block.value
    pb = a.phasebench
    warnings = pb.setdefault("warnings", [])
    warnings.extend(w for w in block.warnings if w not in warnings)
    if block.reasons:
        pb["valid"] = False
        old = list(pb.get("reasons", []))
        pb["reasons"] = [*block.reasons, *old] if block.reasons_first else [*old, *block.reasons]


def analyse(a: RunAnalysis, steps: Sequence[Step] = STEPS) -> dict[str, Any]:
    """Run ``steps`` in order on ``a``; returns the summary (also ``a.summary``). A step that raises is a warning
    naming it and the error; the steps after it still run. A failed step that decides validity (capacity,
    quality) also makes the run INVALID with that reason: an unchecked run is not a passed one."""
    a.summary = _skeleton()
    failed: list[str] = []
    unchecked: list[str] = []
    for step in steps:
        try:
            out = step.run(a)
        except Exception as e:  # noqa: BLE001 - a failing analysis step must never lose the run
            where = traceback.extract_tb(e.__traceback__)[-1]
            failed.append(f"analysis step {step.name!r} failed: {type(e).__name__}: {e} "
                          f"({where.filename.rsplit('/', 1)[-1]}:{where.lineno}); its block is missing")
            if step.decides_validity:
                unchecked.append(f"the {step.name} check could not be made (its analysis step failed: "
                                 f"{type(e).__name__}); the run is not valid unchecked")
            continue
        if out is not SKIP:
            _place(a, step, out)
    a.phasebench.setdefault("warnings", []).extend(failed)
    if unchecked:
        a.phasebench["valid"] = False
        a.phasebench["reasons"] = [*a.phasebench.get("reasons", []), *unchecked]
    return a.summary


def write_run(folder: RunFolder, manifest: dict[str, Any], summary: dict[str, Any]) -> None:
    """A finished run's files: the manifest, ``summary.json``, and the same figures in MLPerf LoadGen's
    ``mlperf_log_summary.txt`` (``loadgen.py``)."""
    from .loadgen import LOG_SUMMARY, log_summary
    from .results import as_manifest, as_summary

    folder.write_manifest(manifest)
    folder.write_summary(summary)
    (folder.path / LOG_SUMMARY).write_text(log_summary(as_manifest(manifest), as_summary(summary)), encoding="utf-8")
