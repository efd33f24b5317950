"""What a benchmark is: pydantic models read from YAML (``--spec``) and overridden by CLI flags.

This is the edge of the program; everything inside works on these validated values.
"""

from __future__ import annotations

import math
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class SpecError(ValueError):
    """A user mistake in a spec or flag: printed as one line, never a traceback."""


class Scenario(str, Enum):
    single_stream = "single-stream"
    concurrency = "concurrency"
    server = "server"
    offline = "offline"
    sweep = "sweep"
    trace = "trace"  # a recorded workload replayed at its timestamps (--trace FILE)


class Endpoint(str, Enum):
    completions = "completions"
    chat = "chat"


class LengthDist(BaseModel):
    """A token-length distribution: ``512`` (exact) or ``512:64`` (normal, mean:stddev, clipped to >= 1)."""

    model_config = ConfigDict(frozen=True)
    mean: int = Field(ge=1)
    stddev: float = Field(default=0.0, ge=0)

    @classmethod
    def parse(cls, value: Any) -> "LengthDist":
        if isinstance(value, LengthDist):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, int):
            return cls(mean=value)
        text = str(value).strip()
        m = re.fullmatch(r"(\d+)(?::(\d+(?:\.\d+)?))?", text)
        if not m:
            raise SpecError(f"bad token length {text!r}: use N or N:stddev, e.g. 512 or 512:64")
        return cls(mean=int(m.group(1)), stddev=float(m.group(2) or 0))

    def __str__(self) -> str:
        return f"{self.mean}" if not self.stddev else f"{self.mean}:{self.stddev:g}"


class TimeDist(BaseModel):
    """A time in seconds: ``2`` (fixed) or ``2:0.5`` (normal, mean:stddev, clipped to >= 0)."""

    model_config = ConfigDict(frozen=True)
    mean: float = Field(ge=0)
    stddev: float = Field(default=0.0, ge=0)

    @classmethod
    def parse(cls, value: Any) -> "TimeDist":
        if isinstance(value, TimeDist):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0:
                raise SpecError(f"bad time {value!r}: use S or S:stddev seconds, e.g. 2 or 2:0.5")
            return cls(mean=float(value))
        text = str(value).strip()
        m = re.fullmatch(r"(\d+(?:\.\d*)?)(?::(\d+(?:\.\d*)?))?", text)
        if not m:
            raise SpecError(f"bad time {text!r}: use S or S:stddev seconds, e.g. 2 or 2:0.5")
        return cls(mean=float(m.group(1)), stddev=float(m.group(2) or 0))


class SLO(BaseModel):
    """Service-level objectives on each request (milliseconds).

    ``percentile`` is the MLPerf-style constraint used for validity (e.g. p99 TTFT <= 2000 ms);
    goodput always counts requests one by one against the thresholds.
    """

    model_config = ConfigDict(frozen=True)
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    itl_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)
    percentile: float = Field(default=99.0, gt=0, le=100)
    name: str | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in (self.ttft_ms, self.tpot_ms, self.itl_ms, self.e2e_ms))


# MLPerf Inference LLM server-scenario latency constraints (p99 TTFT / p99 TPOT in ms).
MLPERF_SLO_PRESETS: dict[str, tuple[float, float]] = {
    "mlperf-llama2-70b-server": (2000, 200),
    "mlperf-llama2-70b-interactive": (450, 40),
    "mlperf-llama3.1-8b-server": (2000, 100),
    "mlperf-llama3.1-8b-interactive": (500, 30),
    "mlperf-llama3.1-405b-server": (6000, 175),
    "mlperf-llama3.1-405b-interactive": (4500, 80),
}
_SLO_KEYS = {"ttft": "ttft_ms", "tpot": "tpot_ms", "itl": "itl_ms", "e2e": "e2e_ms", "e2el": "e2e_ms"}


def parse_slo(text: str | None) -> SLO:
    """``ttft=2000,tpot=200[,e2e=..][,p=99]`` or an MLPerf preset name such as ``mlperf-llama2-70b-server``."""
    if text is None or not str(text).strip():
        return SLO()
    text = str(text).strip()
    if text in MLPERF_SLO_PRESETS:
        ttft, tpot = MLPERF_SLO_PRESETS[text]
        return SLO(ttft_ms=ttft, tpot_ms=tpot, percentile=99.0, name=text)
    if text.startswith("mlperf"):
        raise SpecError(f"unknown SLO preset {text!r}; known: {', '.join(MLPERF_SLO_PRESETS)}")
    values: dict[str, float] = {}
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise SpecError(f"bad SLO part {part!r}: use key=ms, e.g. ttft=2000,tpot=200")
        try:
            num = float(raw)
        except ValueError:
            raise SpecError(f"bad SLO value {raw!r} for {key}: not a number") from None
        if key in ("p", "percentile"):
            values["percentile"] = num
        elif key in _SLO_KEYS:
            values[_SLO_KEYS[key]] = num
        else:
            raise SpecError(f"unknown SLO key {key!r}; use ttft, tpot, itl, e2e, p")
    try:
        return SLO(**values)
    except ValidationError as e:
        raise SpecError(f"bad SLO {text!r}: {_first_error(e)}") from None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg')}" if loc else str(err.get("msg"))


class RunSpec(BaseModel):
    """One benchmark run (or sweep). Every field has a CLI flag of the same name."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(default=None, description="model name sent in requests (default: first of /v1/models)")
    endpoint: Endpoint = Endpoint.completions
    scenario: Scenario = Scenario.concurrency
    concurrency: list[int] = Field(default_factory=lambda: [1])
    rate: list[float] = Field(default_factory=list)
    burstiness: float = Field(default=1.0, gt=0)
    requests: int | None = Field(default=None, ge=1)
    duration: float | None = Field(default=None, gt=0)
    input_tokens: LengthDist = Field(default_factory=lambda: LengthDist(mean=128))
    output_tokens: LengthDist = Field(default_factory=lambda: LengthDist(mean=64))
    preset: str | None = None
    dataset: Path | None = None
    tokenizer: str | None = Field(default=None, description="tokenizer.json path, 'server' (/tokenize), or 'approx'")
    slo: SLO = Field(default_factory=SLO)
    warmup: float = Field(default=0.0, ge=0, description="seconds at the start excluded from metrics")
    cooldown: float = Field(default=0.0, ge=0, description="seconds at the end excluded from metrics")
    warmup_requests: int | None = Field(default=None, ge=0, description="requests of the run's shape sent and discarded "
                                        "before the run (default: one short request per connection, to open them)")
    seed: int = 0
    out: Path | None = None
    api_key_env: str | None = Field(default=None, description="name of the env var holding the API key")
    exact_output: bool = True
    timeout: float = Field(default=600.0, gt=0, description="per-request total timeout, seconds")
    stall_timeout: float = Field(default=60.0, gt=0, description="max seconds between two reads of one stream")
    temperature: float = 0.0
    max_connections: int = Field(default=4096, ge=1)
    workers: int | None = Field(default=None, ge=1, le=256, description="client worker processes (default: auto, "
                                "one per spare core when the load needs it)")
    ray: str | None = Field(default=None, description="run the client workers as Ray actors: 'auto' or a cluster address")
    transport: Literal["auto", "raw", "aiohttp"] = Field(
        default="auto", description="auto: raw sockets with kernel receive timestamps for plain http:// on Linux, else aiohttp")
    model_spec: str | None = Field(default=None, description="catalog model or config.json/GGUF for MBU/MFU")
    hardware: str | None = Field(default=None, description="catalog hardware for MBU/MFU (default: local)")
    devices: int = Field(default=1, ge=1, description="devices serving the target (for cost per token)")
    price_per_hour: float | None = Field(default=None, ge=0, description="USD per device-hour (overrides the catalog's)")
    weight_precision: str | None = Field(default=None, description="weights' storage precision for MBU (default fp16; a GGUF's own size)")
    mlperf: bool = Field(default=False, description="apply MLPerf validity rules (>= 600 s, min queries)")
    tags: dict[str, str] = Field(default_factory=dict)
    # workloads as they arrive (docs/workloads.md)
    trace: Path | None = Field(default=None, description="replay a recorded trace (Mooncake JSONL, Azure CSV, plain JSONL)")
    trace_speed: float = Field(default=1.0, gt=0, description="trace time scale: 2 replays twice as fast")
    trace_window: str | None = Field(default=None, description="A:B seconds of the trace to replay")
    turns: LengthDist | None = Field(default=None, description="turns per conversation (N or N:stddev); with "
                                     "--dataset, the most turns replayed per conversation")
    think_time: TimeDist = Field(default_factory=lambda: TimeDist(mean=0.0),
                                 description="seconds between a turn's answer and the next turn (S or S:stddev)")

    @field_validator("input_tokens", "output_tokens", mode="before")
    @classmethod
    def _len(cls, v: Any) -> LengthDist:
        return LengthDist.parse(v)

    @field_validator("turns", mode="before")
    @classmethod
    def _turns(cls, v: Any) -> LengthDist | None:
        return None if v is None else LengthDist.parse(v)

    @field_validator("think_time", mode="before")
    @classmethod
    def _think(cls, v: Any) -> TimeDist:
        return TimeDist(mean=0.0) if v is None else TimeDist.parse(v)

    @field_validator("slo", mode="before")
    @classmethod
    def _slo(cls, v: Any) -> Any:
        if v is None or isinstance(v, (SLO, dict)):
            return v or SLO()
        return parse_slo(str(v))

    @field_validator("concurrency", "rate", mode="before")
    @classmethod
    def _list(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):
            return [x for x in (p.strip() for p in v.split(",")) if x]
        if isinstance(v, (int, float)):
            return [v]
        return v

    @field_validator("concurrency")
    @classmethod
    def _conc_pos(cls, v: list[int]) -> list[int]:
        if any(c < 1 for c in v):
            raise ValueError("concurrency must be >= 1")
        return v

    @field_validator("rate")
    @classmethod
    def _rate_pos(cls, v: list[float]) -> list[float]:
        if any(not (r > 0) or math.isinf(r) for r in v):
            raise ValueError("rate must be a positive number of requests per second")
        return v

    @model_validator(mode="after")
    def _check(self) -> "RunSpec":
        if self.trace is not None:
            if self.scenario == Scenario.concurrency:  # the default: a trace brings its own arrivals
                self.scenario = Scenario.trace
            if self.scenario != Scenario.trace:
                raise ValueError(f"--trace replays the trace's own arrivals; it does not combine with scenario "
                                 f"'{self.scenario.value}'")
            if self.turns is not None:
                raise ValueError("--trace and --turns do not combine (a trace's conversations are in the trace)")
        elif self.scenario == Scenario.trace:
            raise ValueError("scenario 'trace' needs --trace FILE")
        if self.turns is not None and self.scenario in (Scenario.offline, Scenario.sweep):
            raise ValueError(f"--turns runs conversations closed-loop (--concurrency) or open-loop (--scenario server "
                             f"--rate); not scenario '{self.scenario.value}'")
        if self.scenario == Scenario.server and not self.rate:
            raise ValueError("scenario 'server' needs --rate (requests per second)")
        if self.scenario == Scenario.server and len(self.rate) > 1:
            raise ValueError("scenario 'server' takes one --rate; use --scenario sweep for a list")
        if self.scenario == Scenario.concurrency and len(self.concurrency) > 1:
            raise ValueError("scenario 'concurrency' takes one --concurrency; use --scenario sweep for a list")
        if self.scenario == Scenario.sweep and not (self.rate or len(self.concurrency) > 0):
            raise ValueError("scenario 'sweep' needs --concurrency 1,2,4 or --rate 1,2,4")
        if self.requests is None and self.duration is None and self.trace is None:
            self.requests = 100 if self.scenario != Scenario.single_stream else 20
        return self

    def public_dict(self) -> dict[str, Any]:
        """The spec as written to results: secrets are never in it (only the env var's *name*)."""
        d = self.model_dump(mode="json")
        d["url"] = redact_url(d.get("url"))
        return d

    def sweep_points(self) -> list["RunSpec"]:
        """The single runs a sweep is made of (a non-sweep spec is its own single point)."""
        if self.scenario != Scenario.sweep:
            return [self]
        if self.rate:
            return [self.model_copy(update={"scenario": Scenario.server, "rate": [r]}) for r in self.rate]
        return [
            self.model_copy(update={"scenario": Scenario.concurrency, "concurrency": [c]}) for c in self.concurrency
        ]


def redact_url(url: str | None) -> str | None:
    """Drop user:password@ and query strings (which may hold keys) from a URL."""
    if not url:
        return url
    url = re.sub(r"//[^/@]*@", "//", url)
    return url.split("?", 1)[0]


def load_spec_file(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except OSError as e:
        raise SpecError(f"cannot read spec file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SpecError(f"spec file {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"spec file {path} must be a mapping of field: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_spec(file: Path | None = None, **overrides: Any) -> RunSpec:
    """Spec from an optional YAML file, then CLI overrides (``None`` means 'not given')."""
    data: dict[str, Any] = load_spec_file(file) if file else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RunSpec(**data)
    except SpecError:
        raise
    except ValidationError as e:
        raise SpecError(f"bad spec: {_first_error(e)}") from None
