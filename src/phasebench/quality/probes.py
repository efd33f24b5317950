"""The quality probe set: small, fixed prompts with known answers, shipped with the package or your own.

Two kinds (one JSON object a line):
- ``generate``: a greedy (temperature 0) continuation compared with ``reference``
  (``{"id", "kind": "generate", "prompt", "reference", "max_tokens"}``);
- ``choice``: a cloze with ``choices`` and the index of the ``answer``, scored by the log-likelihood of each
  choice's first token where the server returns logprobs, else by whether the greedy answer starts with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..jsonl import object_lines
from ..spec import SpecError

TOP_LOGPROBS = 5  # OpenAI's legacy completions allow at most 5; llama.cpp and vLLM accept it
CHOICE_MAX_TOKENS = 3
MAX_PROBES = 1000


class QualityError(SpecError):
    """A bad probe set, reference or quality option: one line, exit 2."""


class ProbeModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=80)
    kind: Literal["generate", "choice"]
    prompt: str = Field(min_length=1)
    reference: str | None = None
    choices: list[str] | None = None
    answer: int | None = None
    max_tokens: int = Field(default=8, ge=1, le=256)

    @model_validator(mode="after")
    def _check(self) -> ProbeModel:
        if self.kind == "generate":
            if not (self.reference and self.reference.strip()):
                raise ValueError("a 'generate' probe needs a non-empty 'reference'")
            if self.choices is not None or self.answer is not None:
                raise ValueError("'choices'/'answer' belong to 'choice' probes")
        else:
            if not self.choices or len(self.choices) < 2 or any(not c.strip() for c in self.choices):
                raise ValueError("a 'choice' probe needs 'choices': at least 2 non-empty strings")
            if self.answer is None or not 0 <= self.answer < len(self.choices):
                raise ValueError(f"'answer' must be an index into 'choices' (0..{len(self.choices) - 1})")
        return self


@dataclass(frozen=True)
class Probe:
    id: str
    kind: str  # generate | choice
    prompt: str
    reference: str | None = None
    choices: tuple[str, ...] | None = None
    answer: int | None = None
    max_tokens: int = 8

    @property
    def gold(self) -> str:
        """The text a correct answer starts with."""
        if self.kind == "choice":
            assert self.choices is not None and self.answer is not None
            return self.choices[self.answer]
        return self.reference or ""

    @property
    def output_tokens(self) -> int:
        return CHOICE_MAX_TOKENS if self.kind == "choice" else self.max_tokens


@dataclass(frozen=True)
class ProbeSet:
    name: str  # "default" or the file's path
    probes: tuple[Probe, ...]

def default_path() -> Path:
    return Path(str(resources.files("phasebench") / "data" / "quality" / "default.jsonl"))


def load_probe_set(path: Path | str | None = None) -> ProbeSet:
    """The shipped set (``None``) or a JSONL file; any problem is one ``QualityError`` line naming the line."""
    src = default_path() if path is None else Path(path)
    name = "default" if path is None else str(path)
    try:
        lines = src.read_bytes().splitlines()
    except FileNotFoundError:
        raise QualityError(f"--quality-set {src}: file not found") from None
    except OSError as e:
        raise QualityError(f"--quality-set {src}: cannot read it ({e.strerror})") from None
    probes: list[Probe] = []
    seen: set[str] = set()
    for n, obj in object_lines(lines, lambda n: f"{src} line {n}", QualityError):
        try:
            m = ProbeModel(**obj)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err.get("loc", ()))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            raise QualityError(f"{src} line {n}: {loc + ': ' if loc else ''}{msg}") from None
        if m.id in seen:
            raise QualityError(f"{src} line {n}: duplicate id {m.id!r}")
        seen.add(m.id)
        probes.append(Probe(m.id, m.kind, m.prompt, m.reference, tuple(m.choices) if m.choices else None, m.answer,
                            m.max_tokens))
    if not probes:
        raise QualityError(f"{src}: no probes in the file")
    if len(probes) > MAX_PROBES:
        raise QualityError(f"{src}: {len(probes)} probes; at most {MAX_PROBES} (this is a guard, not an eval suite)")
    return ProbeSet(name, tuple(probes))
