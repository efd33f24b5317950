"""A run folder: ``manifest.json`` (what and where), ``requests.jsonl`` (one line per request, written as
each ends), ``summary.json`` (metrics). A sweep folder holds one run folder per point plus its own
manifest and summary. ``Run.load`` reads any of them back; another program needs only ``json``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .records import RequestRecord, read_records

SCHEMA_VERSION = 1
MANIFEST, REQUESTS, SUMMARY = "manifest.json", "requests.jsonl", "summary.json"
M = TypeVar("M", bound=BaseModel)
MAX_DEPTH = 8  # plan > sweep > point is 3; anything deeper is a damaged or hostile folder


class NotARunError(ValueError):
    pass


class UnsafeFolderError(NotARunError):
    """A child entry that points outside its folder, at the folder itself, or round in a cycle."""


# ---- the typed shape of the three files ----------------------------------------------------------------
# Lenient on purpose: known fields are typed (a wrong type is an error, or a dropped field with a warning),
# anything else is kept as it is, so older and newer phasebench versions read each other's folders.


class _Open(BaseModel):
    # defer_build: a model's validator is built when first used, not at import (a process that never reads or
    # writes a run folder does not pay for the ~40 models); defaults are factories for the same reason
    model_config = ConfigDict(extra="allow", defer_build=True)


class TargetInfo(_Open):
    url: str | None = None
    model: str | None = None
    models: Any = None  # the server's /v1/models answer, verbatim


class SLOTarget(_Open):
    """An SLO as stored (``spec.SLO``): the limits in ms, at a percentile."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    itl_ms: float | None = None
    e2e_ms: float | None = None
    percentile: float | None = None
    name: str | None = None


class LengthRecord(_Open):
    """A token length as the spec stores it (``LengthDist``): mean and stddev."""

    mean: int | float | None = None
    stddev: float | None = None


class SpecRecord(_Open):
    """The spec as stored (``RunSpec.public_dict``): the fields readers rely on."""

    url: str | None = None
    model: str | None = None
    scenario: str | None = None
    concurrency: list[int] | None = None
    rate: list[int | float] | None = None
    requests: int | None = None
    duration: float | None = None
    input_tokens: LengthRecord | None = None
    output_tokens: LengthRecord | None = None
    slo: SLOTarget | None = None
    seed: int | None = None
    tags: dict[str, Any] | None = None
    model_spec: str | None = None
    hardware: str | None = None
    devices: int | None = None


class EngineInfo(_Open):
    """The embedded engine a run was measured on (``engine.server``)."""

    name: str | None = None
    version: str | None = None
    slots: int | None = None


class ModelFile(_Open):
    """The embedded engine's model file (its GGUF header's facts)."""

    name: str | None = None
    file: str | None = None
    path: str | None = None
    quantization: str | None = None
    parameters: int | float | None = None


class SimulationInfo(_Open):
    hardware: str | None = None


class ImportedFrom(_Open):
    tool: str | None = None


class Manifest(_Open):
    schema_version: int | None = None
    kind: str | None = None
    simulated: bool | None = None
    phasebench_version: str | None = None
    created: str | None = None
    spec: SpecRecord | None = None
    target: TargetInfo | None = None
    tokenizer: str | None = None
    environment: dict[str, Any] | None = None
    t0_monotonic_ns: int | None = None
    children: list[str] | None = None
    engine: EngineInfo | None = None
    model_file: ModelFile | None = None
    simulation: SimulationInfo | None = None
    imported_from: ImportedFrom | None = None

    @property
    def model(self) -> str | None:
        """The model a run served: the server's id, else the embedded engine's file, else the spec's."""
        sp = self.spec
        return ((self.target.model if self.target else None) or (self.model_file.name if self.model_file else None)
                or (sp.model if sp else None) or (sp.model_spec if sp else None))


class Stat(_Open):
    """``metrics.describe``: count, mean, std, min, max, percentiles, p99 CI."""

    count: int = 0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p97: float | None = None
    p99: float | None = None
    p99_ci95: list[float | None] | None = None


METRIC_KEYS = ("ttft_ms", "ttft_sent_ms", "send_lag_ms", "ttfot_ms", "tpot_ms", "itl_chunk_ms", "itl_token_ms", "e2e_ms",
               "prefill_tps", "decode_tps", "input_tokens", "output_tokens")


# ``phasebench.metrics``: one Stat per metric of ``metrics.py``; a metric a run does not have is an empty Stat
Metrics = create_model("Metrics", __base__=_Open, **{k: (Stat, Field(default_factory=Stat)) for k in METRIC_KEYS})


class ServerTiming(_Open):
    """``phasebench.server_timing``: what the server said of each request (llama.cpp's timings)."""

    prompt_ms: Stat = Field(default_factory=Stat)
    tpot_ms: Stat = Field(default_factory=Stat)


class Constraint(_Open):
    metric: str | None = None
    percentile: float | None = None
    limit: float | None = None
    value: float | None = None
    ok: bool | None = None


class SloBlock(_Open):
    """``phasebench.slo``: the SLO, how many requests met it, goodput, each latency constraint."""

    slo: SLOTarget | None = None
    met: int | None = None
    total: int | None = None
    attainment: float | None = None
    goodput: float | None = None
    constraints: list[Constraint] = []


class ClientBlock(_Open):
    """``phasebench.client``: what the client saw of itself."""

    cpu_s: float | None = None
    wall_s: float | None = None
    cpu_fraction: float | None = None
    max_in_flight: int | None = None
    target_rate: float | None = None
    scheduled_rate: float | None = None
    achieved_send_rate: float | None = None
    transport: str | None = None


class Roofline(_Open):
    """``phasebench.roofline`` (``model.utilization``): decode MBU, prefill MFU, their peaks, the prediction."""

    error: str | None = None
    model: str | None = None
    hardware: str | None = None
    precision: str | None = None
    step: str | None = None
    mbu: float | None = None
    mfu: float | None = None
    peak_bandwidth_gbps: float | None = None
    peak_tflops: float | None = None
    peak_flops_label: str | None = None
    weight_bytes: float | None = None


class CostBlock(_Open):
    """``phasebench.cost`` (``cost.cost_block``): $/1M tokens, energy."""

    hardware: str | None = None
    devices: int | None = None
    price_per_hour: float | None = None
    price_source: str | None = None
    note: str | None = None
    usd_per_1m_tokens: float | None = None
    usd_per_1m_input_tokens: float | None = None
    usd_per_1m_output_tokens: float | None = None
    usd_per_1m_tokens_at_slo: float | None = None
    usd_per_1m_output_tokens_at_slo: float | None = None
    power_source: str | None = None
    utilisation: float | None = None
    watts: float | None = None
    output_tokens_per_joule: float | None = None
    tokens_per_joule: float | None = None


class ServerPhase(_Open):
    count: float | None = None
    mean_ms: float | None = None


class ServerView(_Open):
    """``phasebench.server_view`` (``serverview.view``): the engine's own metrics over the run."""

    available: bool | None = None
    engine: str | None = None
    phases: dict[str, ServerPhase] = {}
    derived: dict[str, Any] = {}


class PromptCache(_Open):
    source: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    new_tokens: int | None = None
    cached_fraction: float | None = None
    requests_not_reporting: int | None = None
    prefill_new_tps: Stat | None = None


class TurnStats(_Open):
    ttft_ms: Stat | None = None
    cached_tokens: Stat | None = None
    prompt_tokens: Stat | None = None


class Workload(_Open):
    """``phasebench.workload``: the prompt cache's split and TTFT by turn (conversations, traces)."""

    prompt_cache: PromptCache | None = None
    by_turn: dict[str, TurnStats] | None = None


class QualityBlock(_Open):
    """``phasebench.quality`` (``quality.block``), the fields the reports print."""

    valid: bool | None = None
    score: float | None = None
    answered: int | None = None


class KvTransfer(_Open):
    """A disaggregated simulation's KV shipped to the decode pool (``sim.disagg``)."""

    kv_bytes_needed: float | None = None
    kv_bytes_shipped: float | None = None
    saved_fraction: float | None = None
    decode_cached_tokens: int | None = None
    routing: str | None = None


class TurnArrivals(_Open):
    converged: bool | None = None
    passes: int | None = None


class PhasebenchBlock(_Open):
    scenario: str | None = None
    valid: bool | None = None
    partial: bool | None = None
    reasons: list[str] = []
    warnings: list[str] = []
    window_ns: list[int] | None = None
    metrics: Metrics = Field(default_factory=Metrics)
    slo: SloBlock | None = None
    errors: dict[str, int] = {}
    client: ClientBlock = Field(default_factory=ClientBlock)
    tokens: dict[str, Any] = {}
    server_timing: ServerTiming = Field(default_factory=ServerTiming)
    workload: Workload | None = None
    warmup: dict[str, Any] | None = None
    quality: QualityBlock | None = None
    roofline: Roofline | None = None
    server_view: ServerView | None = None
    cost: CostBlock | None = None
    over_capacity: bool | None = None   # simulated
    kv_transfer: KvTransfer | None = None   # simulated, disaggregated
    turn_arrivals: TurnArrivals | None = None   # simulated, disaggregated conversations


_VLLM_FLOATS = {
    f"{stat}_{metric}_ms": (float | None, None)
    for metric in ("ttft", "tpot", "itl", "e2el")
    for stat in ("mean", "median", "std", "p90", "p95", "p99")
}


class _Point(_Open):
    point: str | None = None
    max_concurrency: int | None = None
    request_rate: float | str | None = None
    completed: int | None = None
    failed: int | None = None
    valid: bool | None = None


Point = create_model("Point", __base__=_Point, **{
    k: (float | None, None) for k in ("request_throughput", "output_throughput", "request_goodput", "median_ttft_ms",
                                      "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "median_e2el_ms")})


# ---- a plan's own summary keys (plan.py, plan_any.py) --------------------------------------------------
class PrefillPoint(_Open):
    step: str | None = None
    input_tokens: int | None = None
    ttft_ms_p50: float | None = None
    prefill_tps_p50: float | None = None
    server_prompt_ms_p50: float | None = None


class DecodePoint(_Open):
    concurrency: int | None = None
    tpot_ms_p50: float | None = None
    itl_token_ms_p50: float | None = None
    server_tpot_ms_p50: float | None = None
    output_throughput: float | None = None


class PlanServer(Point):  # type: ignore[misc,valid-type]
    """The plan's server step, as its summary states it."""

    slo_attainment: float | None = None


class PlanFigure(_Open):
    """A figure a plan's verdicts state: its metric ("decode MBU", "prefill MFU"), step, fraction and peak."""

    metric: str | None = None
    step: str | None = None
    fraction: float | None = None
    peak: str | None = None


class MemoryWall(_Open):
    decode_mbu: float | None = None


class _Summary(_Open):
    completed: int | None = None
    failed: int | None = None
    duration: float | None = None
    max_concurrency: int | None = None
    request_rate: float | str | None = None  # vLLM writes "inf" for all-at-once
    burstiness: float | None = None
    total_input_tokens: int | None = None
    total_output_tokens: int | None = None
    request_throughput: float | None = None
    output_throughput: float | None = None
    total_token_throughput: float | None = None
    request_goodput: float | None = None
    model_id: str | None = None
    points: list[Point] | None = None  # type: ignore[valid-type]
    verdicts: list[str] | None = None
    # a plan's
    prefill_sweep: list[PrefillPoint] | None = None
    decode_sweep: list[DecodePoint] | None = None
    decode_stop: str | None = None
    capacity_step: str | None = None
    server: PlanServer | None = None
    memory_wall: MemoryWall | None = None
    figures: list[PlanFigure] | None = None
    notes: list[str] | None = None
    slo: SLOTarget | None = None
    phasebench: PhasebenchBlock = Field(default_factory=PhasebenchBlock)


Summary = create_model("Summary", __base__=_Summary, **_VLLM_FLOATS)


def _drop(data: Any, loc: tuple[Any, ...]) -> str:
    """Remove the deepest existing item on ``loc`` from ``data``; returns its dotted path."""
    parent, key, path = None, None, []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            parent, key, node = node, part, node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            parent, key, node = node, part, node[part]
        else:
            break
        path.append(str(part))
    if parent is None:
        raise ValueError("nothing to drop")
    del parent[key]
    return ".".join(path)


TOO_DAMAGED = "too damaged to read; ignored"


def typed(model: type[M], data: dict[str, Any], what: str,
          droppable: Callable[[tuple[Any, ...]], tuple[Any, ...] | None] | None = None) -> tuple[M, list[str]]:
    """``data`` as a ``model`` instance: the whole of it that is valid, and one warning per field that was not
    (that field is left out). ``droppable(loc)`` says which part of a bad field's location may go (None: the
    field may not, and its ``ValidationError`` is raised); by default the deepest bad item goes."""
    try:
        return model.model_validate(data), []
    except ValidationError:
        pass
    data = copy.deepcopy(data)
    notes: list[str] = []
    for _ in range(200):
        try:
            return model.model_validate(data), notes
        except ValidationError as e:
            err = e.errors()[0]
            loc = tuple(err.get("loc", ()))
            if droppable is not None:
                loc = droppable(loc)
                if loc is None:
                    raise
            try:
                where = _drop(data, loc)
            except ValueError:
                break
            notes.append(f"{what}: {where} ignored ({str(err.get('msg', 'not valid')).lower()})")
    return model(), [*notes, f"{what}: {TOO_DAMAGED}"]


def _as_read(obj: BaseModel, data: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The dict a reader keeps of ``data`` once typed as ``obj``: its valid fields, in the file's key order."""
    if notes and notes[-1].endswith(TOO_DAMAGED):
        return {}
    return _ordered(obj.model_dump(exclude_unset=True), data)


def _ordered(dumped: Any, original: Any) -> Any:
    """``dumped`` with its keys in ``original``'s order, at every depth (a model dumps its declared fields first)."""
    if isinstance(dumped, dict) and isinstance(original, dict):
        keys = [k for k in original if k in dumped] + [k for k in dumped if k not in original]
        return {k: _ordered(dumped[k], original.get(k)) for k in keys}
    if isinstance(dumped, list) and isinstance(original, list) and len(dumped) == len(original):
        return [_ordered(d, o) for d, o in zip(dumped, original)]
    return dumped


def as_summary(summary: dict[str, Any] | BaseModel) -> Any:
    """A summary (``summary.json``'s object, or already a ``Summary``) as the typed ``Summary`` readers take;
    fields of the wrong type are left out (as ``Run.load`` leaves them)."""
    return summary if isinstance(summary, Summary) else typed(Summary, summary, SUMMARY)[0]


def as_manifest(manifest: dict[str, Any] | Manifest) -> Manifest:
    """A manifest (a dict, or already a ``Manifest``) as the typed ``Manifest``; bad fields left out."""
    return manifest if isinstance(manifest, Manifest) else typed(Manifest, manifest, MANIFEST)[0]


# manifest fields typed since the first schema: one of the wrong type is left out with a warning, never the folder
_LENIENT = {"engine", "model_file", "simulation", "imported_from", ("spec", "input_tokens"), ("spec", "output_tokens"),
            ("spec", "slo"), ("spec", "seed"), ("spec", "tags")}


def _lenient(loc: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The part of a bad manifest field that may be left out: a field typed since the first schema, else None."""
    if loc[:1] and loc[0] in _LENIENT:
        return loc[:1]
    return loc[:2] if loc[:2] in _LENIENT else None


def _typed_manifest(manifest: Any, where: Path | str, notes: list[str] | None) -> tuple[Manifest, dict[str, Any]]:
    """The manifest as read, typed and as its dict: a JSON object whose known fields have their types, or
    NotARunError. A wrong-typed field among those typed later (``_LENIENT``) is left out instead, with a line in
    ``notes``."""
    if not isinstance(manifest, dict):
        raise NotARunError(f"{where} is not a run manifest (a JSON object); it holds {type(manifest).__name__}")
    try:
        obj, bad = typed(Manifest, manifest, str(where), _lenient)
    except ValidationError as e:
        err = e.errors()[0]
        raise NotARunError(f"{where}: field {'.'.join(map(str, err.get('loc', ())))!r} "
                           f"{str(err.get('msg', 'is not valid')).lower()}") from None
    if bad and bad[-1].endswith(TOO_DAMAGED):
        raise NotARunError(f"{where}: too damaged to read")
    if notes is not None:
        notes.extend(bad)
    return obj, _as_read(obj, manifest, bad)


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    tmp.replace(path)  # atomic: a reader never sees half a file


def read_json(path: Path) -> Any:
    return orjson.loads(Path(path).read_bytes())


@dataclass
class Run:
    """A measured or simulated run (or a sweep of them) and its folder."""

    path: Path | None
    manifest: dict[str, Any]
    summary: dict[str, Any]
    records: list[RequestRecord] = field(default_factory=list)
    children: list["Run"] = field(default_factory=list)
    skipped_lines: int = 0
    load_warnings: list[str] = field(default_factory=list)  # what Run.load found damaged and left out
    # the typed views every reader takes, made once from the two dicts when the Run is made (loaded, or at the
    # end of a run); ``summary``/``manifest`` stay the JSON objects as written
    # (``Run.load`` hands over the ones it typed while reading the files: they are not made twice)
    result: Summary = field(default=None, repr=False, compare=False)  # type: ignore[valid-type]
    meta: Manifest = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.result is None:
            self.result = as_summary(self.summary)
        if self.meta is None:
            self.meta = as_manifest(self.manifest)

    @property
    def valid(self) -> bool:
        return bool(self.result.phasebench.valid)

    @property
    def partial(self) -> bool:
        return bool(self.result.phasebench.partial)

    @property
    def is_plan(self) -> bool:
        return self.meta.kind == "plan"

    @property
    def is_sweep(self) -> bool:
        return bool(self.children)

    def leaves(self) -> list["Run"]:
        """The runs that hold requests: this one, or every step of a sweep or plan, depth first."""
        return [leaf for c in self.children for leaf in c.leaves()] if self.children else [self]

    @property
    def scenario(self) -> str | None:
        """The spec's scenario (None for a plan or a folder without a spec)."""
        return self.meta.spec.scenario if self.meta.spec else None

    @property
    def closed_loop(self) -> bool:
        return self.scenario in ("concurrency", "single-stream")

    @property
    def ran_alone(self) -> bool:
        """Its requests had the engine to themselves: single-stream, or concurrency 1."""
        return self.scenario == "single-stream" or (
            self.scenario == "concurrency" and self.meta.spec is not None and self.meta.spec.concurrency == [1])

    @classmethod
    def load(cls, path: Path | str) -> "Run":
        """Read a run, sweep or plan folder back through the typed shapes above.

        A missing or unreadable manifest, or a child entry that leaves the folder, is a ``NotARunError``
        (one line, naming the file). A damaged summary, damaged record lines or a missing child folder load
        what is whole; each problem is a line in ``load_warnings`` (children's included), naming file and line.
        """
        return cls._load(Path(path), (), [])

    @classmethod
    def _load(cls, path: Path, seen: tuple[Path, ...], notes: list[str]) -> "Run":
        if not (path / MANIFEST).is_file():
            raise NotARunError(f"{path} is not a phasebench run folder (no {MANIFEST})")
        real = path.resolve()
        if real in seen:
            raise UnsafeFolderError(f"{path}: the run folders' children loop back to {real}")
        if len(seen) >= MAX_DEPTH:
            raise UnsafeFolderError(f"{path}: run folders nested more than {MAX_DEPTH} deep")
        meta, manifest = _typed_manifest(_read_json(path / MANIFEST, fatal=True, notes=notes), path / MANIFEST, notes)
        summary: dict[str, Any] = {}
        result = None
        if (path / SUMMARY).exists():
            raw = _read_json(path / SUMMARY, fatal=False, notes=notes)
            if raw is not None and not isinstance(raw, dict):
                notes.append(f"{path / SUMMARY} holds {type(raw).__name__}, not a summary object; ignored")
            elif isinstance(raw, dict):
                result, bad = typed(Summary, raw, str(path / SUMMARY))
                summary = _as_read(result, raw, bad)
                notes.extend(bad)
        children = []
        for name in manifest.get("children") or []:
            child = _child_path(path, name)
            if not (child / MANIFEST).is_file():
                notes.append(f"{path / MANIFEST}: child {name!r} has no {MANIFEST} (an interrupted step?); left out")
                continue
            try:
                children.append(cls._load(child, (*seen, real), notes))
            except UnsafeFolderError:
                raise
            except NotARunError as e:
                notes.append(f"{e}; that step is left out")
        records: list[RequestRecord] = []
        skipped = 0
        if (path / REQUESTS).exists():
            try:
                rr = read_records(path / REQUESTS)
            except OSError as e:
                notes.append(f"{path / REQUESTS}: cannot be read ({e.strerror or e}); no records")
            else:
                records, skipped = rr.records, rr.skipped
                if skipped:
                    notes.append(f"{path / REQUESTS}: {skipped} damaged line(s) skipped ({rr.describe_bad()})")
        run = cls(path, manifest, summary, records, children, skipped, result=result, meta=meta)
        run.load_warnings = notes
        return run


def _read_json(path: Path, fatal: bool, notes: list[str]) -> Any:
    try:
        return read_json(path)
    except OSError as e:
        msg = f"{path} cannot be read ({e.strerror or e})"
    except orjson.JSONDecodeError as e:
        msg = f"{path} is not valid JSON (truncated or damaged: {e})"
    if fatal:
        raise NotARunError(msg)
    notes.append(msg + "; ignored")
    return None


def _child_path(root: Path, name: Any) -> Path:
    """A child folder named in a manifest: a plain relative path that stays inside ``root`` once resolved."""
    where = root / MANIFEST
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise UnsafeFolderError(f"{where}: child {name!r} is not a folder name")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise UnsafeFolderError(f"{where}: child {name!r} is outside the folder (absolute or with '..'); refused")
    child = root / rel
    top, real = root.resolve(), child.resolve()
    if real == top:
        raise UnsafeFolderError(f"{where}: child {name!r} is the folder itself (a cycle); refused")
    if not real.is_relative_to(top):
        raise UnsafeFolderError(f"{where}: child {name!r} leads outside the folder (to {real}); refused")
    return child


class RunFolder:
    """Creates the folder and writes its files; ``requests.jsonl`` is owned by a ``RecordWriter``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"--out {self.path} is a file; give a folder (a new or empty one)")
        if self.path.exists() and any(self.path.iterdir()):
            if (self.path / MANIFEST).exists():
                raise FileExistsError(f"{self.path} already holds a run; choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def requests_path(self) -> Path:
        return self.path / REQUESTS

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest = {"schema_version": SCHEMA_VERSION, **manifest}
        _check_on_write(Manifest, manifest, self.path / MANIFEST)
        write_json(self.path / MANIFEST, manifest)

    def write_summary(self, summary: dict[str, Any]) -> None:
        _check_on_write(Summary, summary, self.path / SUMMARY)
        write_json(self.path / SUMMARY, summary)


def _check_on_write(model: type[BaseModel], data: dict[str, Any], where: Path) -> None:
    """What is written is what ``Run.load`` reads: a field of the wrong type is a phasebench bug, reported as
    a warning (the file is still written in full: a run is never lost to a check)."""
    try:
        model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        warnings.warn(f"{where}: field {'.'.join(map(str, err.get('loc', ())))} does not match its type "
                      f"({err.get('msg')}); please report this", RuntimeWarning, stacklevel=3)
