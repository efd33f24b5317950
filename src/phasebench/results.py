"""A run folder: ``manifest.json`` (what and where), ``requests.jsonl`` (one line per request, written as
each ends), ``summary.json`` (metrics). A sweep folder holds one run folder per point plus its own
manifest and summary. ``Run.load`` reads any of them back; another program needs only ``json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .records import RequestRecord, read_records

SCHEMA_VERSION = 1
MANIFEST, REQUESTS, SUMMARY = "manifest.json", "requests.jsonl", "summary.json"


class NotARunError(ValueError):
    pass


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

    @property
    def valid(self) -> bool:
        return bool(self.summary.get("phasebench", {}).get("valid", False))

    @property
    def partial(self) -> bool:
        return bool(self.summary.get("phasebench", {}).get("partial", False))

    @property
    def is_sweep(self) -> bool:
        return bool(self.children)

    def leaves(self) -> list["Run"]:
        """The runs that hold requests: this one, or every step of a sweep or plan, depth first."""
        return [leaf for c in self.children for leaf in c.leaves()] if self.children else [self]

    @property
    def closed_loop(self) -> bool:
        return (self.manifest.get("spec") or {}).get("scenario") in ("concurrency", "single-stream")

    @property
    def ran_alone(self) -> bool:
        """Its requests had the engine to themselves: single-stream, or concurrency 1."""
        sp = self.manifest.get("spec") or {}
        return sp.get("scenario") == "single-stream" or (sp.get("scenario") == "concurrency" and sp.get("concurrency") == [1])

    @classmethod
    def load(cls, path: Path | str) -> "Run":
        path = Path(path)
        if not (path / MANIFEST).exists():
            raise NotARunError(f"{path} is not a phasebench run folder (no {MANIFEST})")
        try:
            manifest = read_json(path / MANIFEST)
        except orjson.JSONDecodeError:
            raise NotARunError(f"{path / MANIFEST} is not valid JSON") from None
        summary = read_json(path / SUMMARY) if (path / SUMMARY).exists() else {}
        children = [cls.load(path / c) for c in manifest.get("children", [])]
        records: list[RequestRecord] = []
        skipped = 0
        if (path / REQUESTS).exists():
            rr = read_records(path / REQUESTS)
            records, skipped = rr.records, rr.skipped
        return cls(path, manifest, summary, records, children, skipped)


class RunFolder:
    """Creates the folder and writes its files; ``requests.jsonl`` is owned by a ``RecordWriter``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()):
            if (self.path / MANIFEST).exists():
                raise FileExistsError(f"{self.path} already holds a run; choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def requests_path(self) -> Path:
        return self.path / REQUESTS

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.path / MANIFEST, {"schema_version": SCHEMA_VERSION, **manifest})

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.path / SUMMARY, summary)
