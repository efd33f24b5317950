"""The per-request timeline, and its JSON Lines writer and reader.

Every timestamp is integer nanoseconds from ``time.perf_counter_ns`` (CLOCK_MONOTONIC), stored relative to
the run's start ``t0`` (recorded in the manifest). ``None`` means the request never got that far.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import IO, Any, Iterable

import orjson
from pydantic import TypeAdapter, ValidationError

RECORD_SCHEMA = 1

ERROR_TYPES = (
    "http_4xx",
    "http_5xx",
    "http_429",
    "connection",
    "timeout",
    "stall",
    "malformed",
    "dropped",
    "server_error",
    "cancelled",
    "oversize",  # one event grew past ClientConfig.max_event_bytes
    "encoding",  # a Content-Encoding the client does not decode (br, zstd), or a corrupt gzip/deflate stream
    "client_error",  # an unexpected exception in the client itself, with its type and message
    "imported_error",  # a failed request in another tool's result file (vLLM's keeps only the error's text)
)


@dataclass(slots=True)
class RequestRecord:
    index: int
    request_id: str
    scheduled_ns: int
    sent_ns: int | None = None
    headers_ns: int | None = None
    first_byte_ns: int | None = None
    first_token_ns: int | None = None
    first_answer_ns: int | None = None
    last_token_ns: int | None = None
    end_ns: int | None = None
    # One entry per token-bearing chunk: arrival time and the number of tokens it carried.
    chunk_ns: list[int] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)
    reasoning_chunks: int = 0
    input_tokens: int | None = None  # what the workload intended
    prompt_tokens: int | None = None  # what the server's usage said
    expected_output_tokens: int | None = None
    output_tokens: int | None = None  # server usage first, else client count
    output_tokens_client: int | None = None  # counted by the client (tokenizer, or chunks)
    output_tokens_source: str | None = None  # "usage" | "tokenizer" | "chunks"
    length_met: bool | None = None
    finish_reason: str | None = None
    status: int | None = None
    error: str | None = None
    error_type: str | None = None
    server_timing: dict[str, Any] | None = None  # engine's own timing (llama.cpp timings, ollama durations)
    server_stamps: list[int] | None = None  # mock server only: its send time of each chunk (same clock)
    retries: int = 0  # re-sends after a stale pooled connection failed before any byte was exchanged
    warmup: bool = False
    simulated: bool = False
    cached_tokens: int | None = None  # prompt tokens the server served from its cache (usage / llama.cpp cache_n)
    # raw transport (kernel receive timestamps): the client's read delay per token-bearing read (read − kernel
    # stamp), reads that carried more than one event, and how much earlier the first token may have arrived
    read_delay_ns: list[int] | None = None
    coalesced_reads: int = 0
    ttft_uncertainty_ns: int | None = None
    # quality probes only (phasebench.quality): the probe's id, the answer's text, per-token logprobs as
    # [token, logprob, [[top token, logprob], ...]]; load requests leave them None
    probe: str | None = None
    text: str | None = None
    logprobs: list[Any] | None = None
    # multi-turn conversations and traces: the conversation this request belongs to and its turn (0-based)
    conversation: int | None = None
    turn: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.end_ns is not None

    def to_json(self) -> bytes:
        return orjson.dumps(self) + b"\n"  # orjson writes dataclasses itself (asdict's deep copy was the cost)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RequestRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class RecordWriter:
    """Appends one line per finished request and flushes it at once: a crash loses nothing finished."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[bytes] = open(self.path, "ab", buffering=0)
        self.count = 0

    def write(self, rec: RequestRecord) -> None:
        self._f.write(rec.to_json())
        self.count += 1

    def sync(self) -> None:
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ReadResult:
    records: list[RequestRecord]
    skipped: int  # lines that were not whole, well-typed records (e.g. a crash mid-write, a damaged file)
    bad_lines: list[int] = field(default_factory=list)  # their 1-based line numbers

    def describe_bad(self, limit: int = 8) -> str:
        shown = ", ".join(map(str, self.bad_lines[:limit]))
        more = f" and {len(self.bad_lines) - limit} more" if len(self.bad_lines) > limit else ""
        return f"line{'s' if len(self.bad_lines) > 1 else ''} {shown}{more}"


@cache
def _adapter() -> TypeAdapter[RequestRecord]:
    """Validates one line against ``RequestRecord``'s own field types (unknown keys are ignored)."""
    return TypeAdapter(RequestRecord)


def parse_record(line: bytes | str) -> RequestRecord:
    """One ``requests.jsonl`` line as a record; ``ValueError`` if it is not a JSON object of the right types."""
    try:
        return _adapter().validate_json(line)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err.get("loc", ()))) or "line"
        raise ValueError(f"{where}: {err.get('msg')}") from None


def read_records(path: Path) -> ReadResult:
    """Every whole, well-typed record; a line that is not (``null``, ``[1]``, a wrong type, half a line) is
    counted and its number kept, never fatal."""
    recs: list[RequestRecord] = []
    bad: list[int] = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                recs.append(parse_record(line))
            except ValueError:
                bad.append(n)
    return ReadResult(recs, len(bad), bad)


def write_records(path: Path, records: Iterable[RequestRecord]) -> None:
    with RecordWriter(path) as w:
        for r in records:
            w.write(r)

