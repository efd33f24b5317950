"""A reference: one run's scored answers to the probes, stored as JSON, and a later run's agreement with it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .probes import QualityError
from .scoring import ItemScore, answer_words, first_line, prefix_agreement, rouge_l, words

REFERENCE_SCHEMA = 1


@dataclass
class Reference:
    probe_set: str
    score: float | None
    items: dict[str, dict[str, Any]]  # id -> the item's dict (text, score, loglik, tokens)
    source: dict[str, Any]

    @classmethod
    def from_block(cls, block: dict[str, Any], source: dict[str, Any]) -> Reference:
        return cls(block["probe_set"], block.get("score"), {it["id"]: it for it in block["items"]}, source)

    def to_json(self) -> bytes:
        return orjson.dumps({"schema": REFERENCE_SCHEMA, "kind": "phasebench-quality-reference", "probe_set": self.probe_set,
                             "score": self.score, "source": self.source, "items": list(self.items.values())},
                            option=orjson.OPT_INDENT_2)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Reference:
        try:
            d = orjson.loads(Path(path).read_bytes())
        except FileNotFoundError:
            raise QualityError(f"--quality-ref {path}: file not found") from None
        except (OSError, orjson.JSONDecodeError):
            raise QualityError(f"--quality-ref {path}: not a readable JSON file") from None
        if not isinstance(d, dict) or d.get("kind") != "phasebench-quality-reference" or not isinstance(d.get("items"), list):
            raise QualityError(f"--quality-ref {path}: not a phasebench quality reference "
                               "(make one with `phasebench quality reference RUN -o REF.json`)")
        return cls(d.get("probe_set", "?"), d.get("score"), {it["id"]: it for it in d["items"] if "id" in it}, d.get("source", {}))


def _units(item: dict[str, Any] | ItemScore, other: dict[str, Any] | ItemScore) -> tuple[list[str], list[str]]:
    """Tokens to compare: the server's own pieces when both answers have them, else words of the first line."""
    def get(x: Any, k: str) -> Any:
        return x.get(k) if isinstance(x, dict) else getattr(x, k)

    ta, tb = get(item, "tokens"), get(other, "tokens")
    if ta and tb:
        return list(ta), list(tb)
    return words(first_line(get(item, "text") or "")), words(first_line(get(other, "text") or ""))


def agreement(items: Sequence[ItemScore], ref: Reference) -> dict[str, Any]:
    """Agreement of this run's answers with the reference's, per probe and on average:
    exact-match rate (same first line), token agreement up to the first divergence, ROUGE-L of this answer
    against the reference's answer, and the mean log-likelihood change where both have logprobs."""
    rows = []
    for it in items:
        r = ref.items.get(it.id)
        if r is None or it.text is None or r.get("text") is None:
            continue
        mine, theirs = _units(it, r)
        ref_text = first_line(r["text"])
        ll = (it.loglik - r["loglik"]) if it.loglik is not None and r.get("loglik") is not None else None
        rows.append({"id": it.id, "exact": first_line(it.text).strip() == ref_text.strip(),
                     "prefix": prefix_agreement(mine, theirs),
                     "rouge_l": rouge_l(answer_words(it.text, ref_text) if ref_text.strip() else words(first_line(it.text)),
                                        words(ref_text)) if words(ref_text) else float(not words(first_line(it.text))),
                     "loglik_delta": ll, "score": it.score, "ref_score": r.get("score")})
    lls = [x["loglik_delta"] for x in rows if x["loglik_delta"] is not None and math.isfinite(x["loglik_delta"])]

    def m(key: str) -> float | None:
        v = [float(x[key]) for x in rows]
        return round(sum(v) / len(v), 4) if v else None

    return {"compared": len(rows), "missing": len(ref.items) - len(rows), "exact_match": m("exact"),
            "token_agreement": m("prefix"), "rouge_l": m("rouge_l"),
            "loglik_delta": round(sum(lls) / len(lls), 4) if lls else None,
            "per_probe": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in x.items()} for x in rows]}


def reference_from_run(run: Any) -> Reference:
    """The quality block of a run (its first step that has one) as a reference."""
    for leaf in (run.leaves() if hasattr(run, "leaves") else [run]):
        block = leaf.summary.get("phasebench", {}).get("quality")
        if block:
            m = leaf.meta
            src = {"run": str(leaf.path) if leaf.path else None, "model": m.target.model if m.target else None,
                   "created": m.created, "model_file": m.model_file.path if m.model_file else None}
            return Reference.from_block(block, src)
    raise QualityError(f"{run.path}: this run has no quality block (run it with --quality)")
