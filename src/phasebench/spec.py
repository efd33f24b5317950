"""What a benchmark is: pydantic models read from YAML (``--spec``) and overridden by CLI flags.

This is the edge of the program; everything inside works on these validated values.
"""

from __future__ import annotations

import math
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


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


# Upper bounds on what a run can ask for: far above any real server, low enough that a typo (1e9) is refused
# at once instead of hanging while prompts are built or exhausting memory.
MAX_TOKENS = 1_048_576  # per prompt or reply (1M-token contexts exist; 1e9 does not)
MAX_REQUESTS = 10_000_000
MAX_CONCURRENCY = 100_000
MAX_RATE = 1_000_000.0  # requests per second
MAX_SECONDS = 7 * 86_400.0  # timeouts, durations, warm-up/cool-down


class LengthDist(BaseModel):
    """A token-length distribution: ``512`` (exact) or ``512:64`` (normal, mean:stddev, clipped to >= 1)."""

    model_config = ConfigDict(frozen=True)
    mean: int = Field(ge=1, le=MAX_TOKENS)
    stddev: float = Field(default=0.0, ge=0, le=MAX_TOKENS, allow_inf_nan=False)

    @classmethod
    def parse(cls, value: Any) -> "LengthDist":
        if isinstance(value, LengthDist):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, bool):
            raise SpecError("not a token length: use N or N:stddev, e.g. 512 or 512:64")
        if isinstance(value, int):
            return cls(mean=value)
        text = str(value).strip()
        m = re.fullmatch(r"(\d+)(?::(\d+(?:\.\d+)?))?", text)
        if not m:
            raise SpecError("not a token length: use N or N:stddev, e.g. 512 or 512:64")
        mean, sd = int(m.group(1)), float(m.group(2) or 0)
        if not 1 <= mean <= MAX_TOKENS or sd > MAX_TOKENS:
            raise SpecError(f"N must be 1 to {MAX_TOKENS:,} tokens (N or N:stddev)")
        return cls(mean=mean, stddev=sd)

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
    ttft_ms: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    tpot_ms: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    itl_ms: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    e2e_ms: float | None = Field(default=None, gt=0, allow_inf_nan=False)
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
        err = e.errors()[0]
        key = {v: k for k, v in _SLO_KEYS.items()}.get(str((err.get("loc") or ("",))[0]), "p")
        raise SpecError(f"--slo {text!r}: {key} {_plain(err)}") from None


# The CLI flag for each RunSpec field, for errors in the user's words (the YAML key is the field name).
FLAGS: dict[str, str] = {"out": "--out", "spec": "--spec", "tags": "--tag", "headers": "--header"}


def flag(field: str) -> str:
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def _plain(err: dict[str, Any]) -> str:
    """A pydantic error in plain words: what is accepted."""
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    words = {
        "greater_than": lambda: f"must be greater than {ctx.get('gt')}",
        "greater_than_equal": lambda: f"must be at least {ctx.get('ge')}",
        "less_than": lambda: f"must be less than {ctx.get('lt'):,}",
        "less_than_equal": lambda: f"must be at most {ctx.get('le'):,}",
        "finite_number": lambda: "must be a finite number",
        "int_parsing": lambda: "must be a whole number",
        "int_from_float": lambda: "must be a whole number",
        "int_type": lambda: "must be a whole number",
        "float_parsing": lambda: "must be a number",
        "float_type": lambda: "must be a number",
        "bool_parsing": lambda: "must be true or false",
        "bool_type": lambda: "must be true or false",
        "string_type": lambda: "must be text",
        "list_type": lambda: "must be a list",
        "dict_type": lambda: "must be a mapping",
        "enum": lambda: f"must be one of {ctx.get('expected')}",
        "extra_forbidden": lambda: "is not a known setting",
        "missing": lambda: "is required",
    }
    if kind in words:
        return words[kind]()
    msg = str(err.get("msg", "is not valid"))
    return msg.removeprefix("Value error, ")


def _first_error(e: ValidationError) -> str:
    """``--flag VALUE: what is accepted`` for the first error (a model-level check speaks for itself)."""
    err = e.errors()[0]
    loc = [p for p in err.get("loc", ()) if not isinstance(p, int)]
    if not loc:
        return _plain(err)
    field = str(loc[0])
    if err.get("type") == "extra_forbidden":
        return f"unknown setting {field!r} in the spec"
    plain = _plain(err)
    if plain.startswith("--"):  # a validator that already named its flag and value
        return plain
    value = err.get("input")
    if isinstance(value, Path):
        value = str(value)
    shown = "" if value is None or isinstance(value, (dict, list)) else f" {redact_url(str(value)) if field == 'url' else value!r}"
    sub = f" ({'.'.join(map(str, loc[1:]))})" if len(loc) > 1 else ""
    return f"{flag(field)}{shown}{sub}: {plain}"


class RunSpec(BaseModel):
    """One benchmark run (or sweep). Every field has a CLI flag of the same name."""

    # an error's text never quotes the input: --header values may be credentials
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(default=None, description="model name sent in requests (default: first of /v1/models)")
    endpoint: Endpoint = Endpoint.completions
    scenario: Scenario = Scenario.concurrency
    concurrency: list[int] = Field(default_factory=lambda: [1])
    rate: list[float] = Field(default_factory=list)
    burstiness: float = Field(default=1.0, gt=0, le=1000, allow_inf_nan=False)
    requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    duration: float | None = Field(default=None, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    input_tokens: LengthDist = Field(default_factory=lambda: LengthDist(mean=128))
    output_tokens: LengthDist = Field(default_factory=lambda: LengthDist(mean=64))
    preset: str | None = None
    dataset: Path | None = None
    tokenizer: str | None = Field(default=None, description="tokenizer.json path, 'server' (/tokenize), or 'approx'")
    slo: SLO = Field(default_factory=SLO)
    warmup: float = Field(default=0.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False,
                          description="seconds at the start excluded from metrics")
    cooldown: float = Field(default=0.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False,
                            description="seconds at the end excluded from metrics")
    warmup_requests: int | None = Field(default=None, ge=0, le=MAX_REQUESTS,
                                        description="requests of the run's shape sent and discarded "
                                        "before the run (default: one short request per connection, to open them)")
    seed: int = 0
    out: Path | None = None
    api_key_env: str | None = Field(default=None, description="name of the env var holding the API key")
    exact_output: bool = True
    timeout: float = Field(default=600.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False,
                           description="per-request total timeout, seconds")
    stall_timeout: float = Field(default=60.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False,
                                 description="max seconds between two reads of one stream")
    temperature: float = Field(default=0.0, ge=0, le=100, allow_inf_nan=False)
    max_connections: int = Field(default=4096, ge=1, le=MAX_CONCURRENCY)
    max_event_bytes: int = Field(default=4 * 2**20, ge=1024, le=2**31,
                                 description="one streamed event larger than this fails its request (oversize)")
    workers: int | None = Field(default=None, ge=1, le=256, description="client worker processes (default: auto, "
                                "one per spare core when the load needs it)")
    ray: str | None = Field(default=None, description="run the client workers as Ray actors: 'auto' or a cluster address")
    transport: Literal["auto", "raw", "aiohttp"] = Field(
        default="auto", description="auto: raw sockets with kernel receive timestamps for plain http:// on Linux, else aiohttp")
    model_spec: str | None = Field(default=None, description="catalog model or config.json/GGUF for MBU/MFU")
    hardware: str | None = Field(default=None, description="catalog hardware for MBU/MFU (default: local)")
    devices: int = Field(default=1, ge=1, le=1_000_000, description="devices serving the target (for cost per token)")
    price_per_hour: float | None = Field(default=None, ge=0, allow_inf_nan=False,
                                         description="USD per device-hour (overrides the catalog's)")
    weight_precision: str | None = Field(default=None, description="weights' storage precision for MBU (default fp16; a GGUF's own size)")
    mlperf: bool = Field(default=False, description="apply MLPerf validity rules (>= 600 s, min queries)")
    tags: dict[str, str] = Field(default_factory=dict, description="labels key=value (--tag, repeatable): in the "
                                 "manifest and the results database (`history --tag`)")
    headers: dict[str, str] = Field(default_factory=dict, repr=False, description="extra HTTP headers on every request (--header "
                                    "'Name: value'); the values are secrets: only the names are stored")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="a JSON object merged into every request body")
    metrics_url: str | None = Field(default=None, description="Prometheus endpoint to scrape (default: <server>/metrics; 'off' to skip)")
    nonce: str | None = Field(default=None, description="text at the start of every synthetic prompt; default: fresh per run unless --seed is given ('' for none)")
    prefix_tokens: int = Field(default=0, ge=0, description="shared-prefix workload: tokens of prefix every prompt of a group shares")
    prefix_groups: int = Field(default=1, ge=1, description="shared-prefix workload: how many distinct prefixes")
    quality: bool = Field(default=False, description="mix the quality probes into the load and score them (docs/quality.md)")
    quality_alone: bool = Field(default=False, description="also send the probes alone after the load (implies quality)")
    quality_set: Path | None = Field(default=None, description="your own probe set, JSONL (implies quality)")
    quality_ref: Path | None = Field(default=None, description="a reference from `phasebench quality reference` (implies quality)")
    quality_threshold: float = Field(default=0.99, gt=0, le=1.0, description="pass if score >= this x the reference's")
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

    @field_validator("tags", "headers", "extra_body", mode="before")
    @classmethod
    def _mapping(cls, v: Any, info: ValidationInfo) -> dict[str, Any]:
        """--tag k=v, --header 'K: V' (repeatable) and --extra-body JSON, or mappings from a spec file."""
        parse = {"tags": parse_tags, "headers": parse_headers, "extra_body": parse_extra_body}[info.field_name]
        return parse(v)

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
        if any(not 1 <= c <= MAX_CONCURRENCY for c in v):
            raise ValueError(f"each concurrency must be a whole number from 1 to {MAX_CONCURRENCY:,}")
        return v

    @field_validator("rate")
    @classmethod
    def _rate_pos(cls, v: list[float]) -> list[float]:
        if any(not (0 < r <= MAX_RATE) for r in v):  # also refuses nan and inf
            raise ValueError(f"each rate must be a number of requests per second above 0 and at most {MAX_RATE:,.0f}")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v)

    @field_validator("hardware")
    @classmethod
    def _hardware(cls, v: str | None) -> str | None:
        return None if v is None else check_hardware(v)

    @field_validator("out")
    @classmethod
    def _out(cls, v: Path | None) -> Path | None:
        if v is not None and v.exists() and not v.is_dir():
            raise ValueError(f"--out {str(v)!r} is a file; give a folder (a new or empty one)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _seed_means_no_nonce(cls, data: Any) -> Any:
        """A seed given means 'reproduce exactly': no per-run nonce unless one is given too."""
        if isinstance(data, dict) and data.get("seed") is not None and data.get("nonce") is None:
            return {**data, "nonce": ""}
        return data

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
        if self.turns is not None and (self.quality or self.quality_alone or self.quality_set or self.quality_ref):
            raise ValueError("--quality mixes probes into single requests; it does not combine with --turns")
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
        if "authorization" in {h.lower() for h in self.headers} and (self.api_key_env or (self.url and _has_credentials(self.url))):
            raise ValueError("--header Authorization and --api-key-env (or user:password@ in --url) both set the "
                             "Authorization header; drop one of them")
        if self.api_key_env and self.url and _has_credentials(self.url):
            raise ValueError("--url holds user:password@ and --api-key-env is set: a server takes one Authorization; "
                             "drop one of them")
        if self.prefix_tokens and self.prefix_tokens >= self.input_tokens.mean:
            raise ValueError(f"--prefix-tokens {self.prefix_tokens} must be below --input-tokens {self.input_tokens.mean}")
        if self.quality_alone or self.quality_set or self.quality_ref:
            self.quality = True
        if self.requests is None and self.duration is None and self.trace is None:
            self.requests = 100 if self.scenario != Scenario.single_stream else 20
        return self

    def public_dict(self) -> dict[str, Any]:
        """The spec as written to results: secrets are never in it (only the env var's *name*)."""
        d = self.model_dump(mode="json")
        d["url"] = redact_url(d.get("url"))
        if d.get("metrics_url") not in (None, "off", "none", ""):
            d["metrics_url"] = redact_url(d["metrics_url"])
        d["headers"] = sorted(self.headers)  # header values may be credentials: the names only
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


TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")
MAX_TAG_VALUE = 256
# RFC 9110 token characters: what a header name may hold
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
# set by phasebench itself (framing, streaming, identity encoding); a user's copy would break the measurement
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-type", "accept",
                              "accept-encoding", "x-request-id", "te", "upgrade", "expect"})
# the request body's own fields that --extra-body may not replace (the workload and the streaming are phasebench's)
RESERVED_BODY = frozenset({"stream", "prompt", "messages", "model"})


def _pairs(value: Any, sep: str, flag: str, form: str, echo: bool) -> list[tuple[str, str]]:
    """A repeatable ``KEY<sep>VALUE`` flag (or a mapping from a spec file) as stripped (key, value) pairs. With
    ``echo`` off an item without ``sep`` is not quoted back (it may be a bare credential)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [(str(k), "" if v is None else str(v)) for k, v in value.items()]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{flag}: repeat it for several; use {form}, or a mapping in the spec file")
    pairs = []
    for n, item in enumerate(value, 1):
        key, found, val = str(item).partition(sep)
        if not found:
            shown = f"{str(item)[:80]!r}:" if echo else f"(number {n}) has no {sep!r};"
            raise SpecError(f"{flag} {shown} use {form}")
        pairs.append((key.strip(), val.strip()))
    return pairs


def parse_tags(value: Any) -> dict[str, str]:
    """``--tag k=v`` (repeatable) or a mapping (YAML): keys of letters, digits and ``_ . : / -``, values of
    printable text up to 256 characters."""
    tags: dict[str, str] = {}
    for key, val in _pairs(value, "=", "--tag", "key=value, e.g. --tag gpu=h100", echo=True):
        if not TAG_KEY.fullmatch(key):
            raise SpecError(f"--tag {key[:80]!r}={val[:40]!r}: the key must be 1-64 letters, digits or _ . : / - "
                            "(starting with a letter or digit)")
        if len(val) > MAX_TAG_VALUE or not val.isprintable():
            raise SpecError(f"--tag {key}: the value must be printable text of at most {MAX_TAG_VALUE} characters")
        tags[key] = val
    return tags


def parse_headers(value: Any) -> dict[str, str]:
    """``--header 'Name: value'`` (repeatable) or a mapping. An error names the header, never its value (a
    header may carry a credential)."""
    pairs = _pairs(value, ":", "--header", "'Name: value', e.g. --header 'X-Tenant: bench'", echo=False)
    headers: dict[str, str] = {}
    for name, val in pairs:
        if not HEADER_NAME.fullmatch(name):  # not echoed either: a value typed in the wrong place
            raise SpecError("--header: a header name is letters, digits and !#$%&'*+.^_`|~- before the ':' "
                            "('Name: value')")
        if name.lower() in RESERVED_HEADERS:
            raise SpecError(f"--header {name}: phasebench sets this header itself; it cannot be replaced")
        if any(c in val for c in "\r\n\x00") or not all(c == "\t" or c.isprintable() for c in val):
            raise SpecError(f"--header {name}: the value holds a line break or control character")
        try:
            val.encode("latin-1")
        except UnicodeEncodeError:
            raise SpecError(f"--header {name}: the value must be Latin-1 text (HTTP/1.1 headers)") from None
        if name.lower() in {h.lower() for h in headers}:
            raise SpecError(f"--header {name}: given twice")
        headers[name] = val
    return headers


def parse_extra_body(value: Any) -> dict[str, Any]:
    """``--extra-body JSON``: a JSON object (text) or a mapping (YAML) merged into each request body."""
    if value is None:
        return {}
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError as e:
            raise SpecError(f"--extra-body: not valid JSON ({e.msg} at character {e.pos}); give an object, "
                            "e.g. '{\"top_p\": 0.9}'") from None
    if not isinstance(value, dict):
        raise SpecError(f"--extra-body: must be a JSON object ({{...}}), not {type(value).__name__}")
    clash = sorted(RESERVED_BODY & {str(k) for k in value})
    if clash:
        raise SpecError(f"--extra-body: {', '.join(clash)} cannot be replaced (the workload and streaming are "
                        "phasebench's; use --model for the model)")
    return {str(k): v for k, v in value.items()}


def parse_url(text: str):
    """``yarl.URL(text)``, with any failure to parse raised as ValueError: yarl raises IndexError or TypeError
    on some malformed authorities (``http://[]:x@/@host``), and a user's URL must give a clear error, not a
    traceback."""
    from yarl import URL

    try:
        return URL(text)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the parser trips on is a malformed URL
        raise ValueError(f"malformed URL ({type(e).__name__})") from None


def redact_url(url: str | None) -> str | None:
    """The URL without user:password@, query and fragment (which may hold keys); safe to store and print.

    Parsed as a URL (yarl, as aiohttp does), so a password holding ``@`` goes too. Text that does not parse
    loses everything from the scheme's ``//`` to the last ``@`` and from the first ``?`` or ``#``.
    """
    if not url:
        return url
    from yarl import URL

    text = str(url)
    try:
        u = parse_url(text)
        if u.is_absolute() and u.host and "@" not in u.raw_path:
            bare = u.raw_path == "/" and not re.split(r"[?#]", text, maxsplit=1)[0].endswith("/")
            return str(URL.build(scheme=u.scheme, host=u.raw_host or "", port=u.explicit_port, encoded=True,
                                 path="" if bare else u.raw_path))
    except (ValueError, TypeError):
        pass
    text = re.split(r"[?#]", text, maxsplit=1)[0]
    return re.sub(r"^([^/]*//)?.*@", lambda m: m.group(1) or "", text, flags=re.DOTALL)


URL_SCHEMES = ("http", "https")


def _has_credentials(url: str) -> bool:
    try:
        u = parse_url(url)
    except ValueError:
        return False
    return bool(u.raw_user or u.raw_password)


def check_url(url: str) -> str:
    """An OpenAI-compatible base URL must be absolute http(s) with a host; say what would be accepted."""
    text = url.strip()
    shown = redact_url(text)
    example = "e.g. http://127.0.0.1:8000/v1"
    if "://" not in text:
        raise SpecError(f"--url {shown!r} has no scheme: write it in full, e.g. http://{shown}")
    try:
        u = parse_url(text)
        u.port  # noqa: B018 - parses the port, raising on a bad one
    except (ValueError, TypeError) as e:
        raise SpecError(f"--url {shown!r} is not a valid URL ({e}); {example}") from None
    if u.scheme not in URL_SCHEMES:
        raise SpecError(f"--url {shown!r}: the scheme must be http or https, not {u.scheme!r}; {example}")
    if not u.host:
        raise SpecError(f"--url {shown!r} has no host; {example}")
    if u.raw_query_string or u.raw_fragment or text.endswith(("?", "#")):
        raise SpecError(f"--url {shown!r}: give the base URL without ?query or #fragment (phasebench appends "
                        "/models, /completions to it); pass an API key with --api-key-env")
    return text


def url_hint(url: str | None) -> str:
    """A hint for a server that listed no model: most OpenAI-compatible servers live under ``/v1``."""
    if not url:
        return ""
    try:
        path = parse_url(url).path.rstrip("/")
    except ValueError:
        return ""
    if path.endswith("/v1") or "/v1/" in path:
        return ""
    return f" (the URL has no /v1: most OpenAI-compatible servers answer at {redact_url(url.rstrip('/'))}/v1)"


def check_hardware(name: str) -> str:
    """--hardware must name a catalog record (by key or alias), a user record, ``local`` or a .yaml file; list the
    known ones. Returns the record's canonical key (``h100-sxm5`` → ``h100-sxm``)."""
    if name.lower() == "local" or Path(name).expanduser().suffix in (".yaml", ".yml"):
        if Path(name).expanduser().suffix in (".yaml", ".yml") and not Path(name).expanduser().exists():
            raise SpecError(f"--hardware {name!r}: no such file")
        return name
    from .model.errors import ModelError
    from .model.hardware import aliases, catalog, resolve_key

    try:
        known = catalog()
        key = resolve_key(name, known)
    except ModelError as e:
        raise SpecError(f"--hardware: {e}") from None
    if key is None:
        from .model.errors import did_you_mean

        hint = did_you_mean(name, known, aliases(known))
        raise SpecError(f"--hardware {name!r} is not a known hardware record{hint} (known: local, {', '.join(sorted(known))}; "
                        "`phasebench hardware list` shows them and their aliases)")
    return key          # an alias or other spelling is stored as the record's canonical key


def load_spec_file(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except OSError as e:
        raise SpecError(f"cannot read spec file {path}: {e.strerror}") from None
    import yaml

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
        raise SpecError(_first_error(e) + (f" (in {file})" if file else "")) from None
