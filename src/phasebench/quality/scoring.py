"""Scoring: every function here is pure (text and numbers in, numbers out), so each is tested on known inputs.

- ``words``: lower-cased words with punctuation stripped (the unit of ROUGE-L and exact match);
- ``rouge_l``: ROUGE-L F1 (longest common subsequence of words; precision = LCS/candidate, recall = LCS/reference),
  the F-measure MLPerf reports for its summarization and Llama-2 accuracy runs;
- ``answer_words``: a greedy continuation cut to its first line and to the reference's length, so a correct start
  that goes on is not penalized but one that stops early or goes wrong is;
- ``choice_logprobs``: each choice's score from the first generated position's top logprobs (the longest listed
  token that is a prefix of the choice), or a floor below every listed one when the choice is not listed.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .probes import Probe

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F1 of two word sequences (0 when either is empty)."""
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(candidate), lcs / len(reference)
    return 2 * p * r / (p + r)


def first_line(text: str) -> str:
    text = text.lstrip(" \t")
    return text.split("\n", 1)[0] if text.strip() else ""


def answer_words(text: str, reference: str) -> list[str]:
    """The continuation's first line, in words, cut to the reference's length in words."""
    return words(first_line(text))[: max(1, len(words(reference)))]


def exact_match(text: str, reference: str) -> bool:
    return answer_words(text, reference) == words(reference)


def prefix_agreement(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Tokens of ``a`` that match ``b`` up to the first divergence, as a fraction of ``b`` (the reference).
    Two empty sequences agree fully."""
    if not b:
        return 1.0 if not a else 0.0
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n / len(b)


def choice_logprobs(choices: Sequence[str], top: Sequence[Sequence[Any]]) -> list[float]:
    """Each choice's logprob at the first generated position: the longest listed token that is a non-empty prefix
    of the choice (spaces kept: ' Paris' is listed as ' Paris' or ' Par'); unlisted choices get a floor one nat
    below the lowest listed logprob, so they lose to every listed one and tie with each other."""
    listed = [(str(t), float(lp)) for t, lp in top if t is not None and lp is not None and math.isfinite(lp)]
    floor = (min(lp for _, lp in listed) if listed else 0.0) - 1.0
    out = []
    for c in choices:
        best = None
        for tok, lp in listed:
            if tok and c.startswith(tok) and (best is None or len(tok) > len(best[0])):
                best = (tok, lp)
        out.append(best[1] if best else floor)
    return out


@dataclass
class ItemScore:
    """One probe's answer, scored."""

    id: str
    kind: str
    score: float  # 0..1: ROUGE-L (generate) or correct (choice)
    exact: bool
    method: str  # rouge-l | logprob | greedy-text | unanswered
    text: str | None = None
    loglik: float | None = None  # generate: mean token logprob of the answer; choice: the gold choice's logprob
    tokens: list[str] | None = None  # the server's token pieces, when it sent logprobs
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "kind": self.kind, "score": round(self.score, 4), "exact": self.exact, "method": self.method,
             "text": self.text, "loglik": None if self.loglik is None else round(self.loglik, 4)}
        if self.tokens is not None:
            d["tokens"] = self.tokens
        if self.error:
            d["error"] = self.error
        return d


def score_item(probe: Probe, text: str | None, logprobs: list[Any] | None, error: str | None = None) -> ItemScore:
    if text is None or error:
        return ItemScore(probe.id, probe.kind, 0.0, False, "unanswered", text, error=error or "no answer")
    tokens = [str(t[0]) for t in logprobs] if logprobs else None
    if probe.kind == "generate":
        ref = probe.reference or ""
        cand = answer_words(text, ref)
        lps = [float(t[1]) for t in (logprobs or []) if t[1] is not None]
        ll = sum(lps) / len(lps) if lps else None
        return ItemScore(probe.id, "generate", rouge_l(cand, words(ref)), cand == words(ref), "rouge-l", text, ll, tokens)
    assert probe.choices is not None and probe.answer is not None
    if logprobs and logprobs[0][2]:
        lp = choice_logprobs(probe.choices, logprobs[0][2])
        gold = lp[probe.answer]
        correct = all(gold > v for i, v in enumerate(lp) if i != probe.answer)
        return ItemScore(probe.id, "choice", float(correct), correct, "logprob", text, gold, tokens, extra={"choice_logprobs": lp})
    ok = words(text)[: len(words(probe.gold))] == words(probe.gold)
    return ItemScore(probe.id, "choice", float(ok), ok, "greedy-text", text, None, tokens)


# ---- a broken server: answers no real model gives -------------------------------------------------------

FLOOR_SCORE = 0.10  # any real model (SmolLM2-135M Q2_K included) scores far above this on the shipped set
SHARE_BAD = 0.5  # the share of answers that must look broken before the whole run is called broken


def _looks_repeated(text: str) -> bool:
    w = words(text)
    if len(w) >= 3 and len(set(w)) == 1:  # one word over and over
        return True
    if len(w) >= 6:
        top = Counter(w).most_common(1)[0][1]
        if top / len(w) > 0.6:
            return True
    s = text.strip()
    return len(s) >= 12 and len(set(s)) <= 2


def _not_text(text: str) -> bool:
    if not text:
        return False
    bad = sum(1 for ch in text if ch == "\ufffd" or (unicodedata.category(ch)[0] == "C" and ch not in "\n\t\r"))
    return bad / len(text) > 0.10


def broken_reasons(items: Sequence[ItemScore], output_tokens: Sequence[int | None], max_tokens: Sequence[int],
                   score: float | None) -> list[str]:
    """Why these answers cannot come from a working model (empty list when they could)."""
    answered = [(it, n, m) for it, n, m in zip(items, output_tokens, max_tokens) if it.method != "unanswered"]
    if not answered:
        return ["quality: no probe was answered"]
    k = len(answered)
    reasons: list[str] = []

    def share(pred) -> float:
        return sum(1 for a in answered if pred(*a)) / k

    empty = share(lambda it, n, m: not (it.text or "").strip())
    if empty >= SHARE_BAD:
        reasons.append(f"quality: {empty:.0%} of the probes' answers are empty")
    over = share(lambda it, n, m: n is not None and n > m)
    if over > 0:
        reasons.append(f"quality: {over:.0%} of the answers are longer than the max_tokens asked for (wrong length)")
    short = share(lambda it, n, m: bool(n) and len(it.text or "") < n / 4)
    if short >= SHARE_BAD and empty < SHARE_BAD:
        reasons.append(f"quality: {short:.0%} of the answers have far fewer characters than the tokens counted (wrong length)")
    rep = share(lambda it, n, m: _looks_repeated(it.text or ""))
    texts = [(it.text or "").strip() for it, _, _ in answered if (it.text or "").strip()]
    same = Counter(texts).most_common(1)[0][1] / k if texts else 0.0
    if rep >= SHARE_BAD or (k >= 4 and same >= SHARE_BAD):
        reasons.append(f"quality: the answers are repeated ({rep:.0%} loop one word or character; "
                       f"{same:.0%} are the same answer to different prompts)")
    nt = share(lambda it, n, m: _not_text(it.text or ""))
    if nt >= SHARE_BAD:
        reasons.append(f"quality: {nt:.0%} of the answers are not text (control or replacement characters)")
    if score is not None and score < FLOOR_SCORE and not reasons:
        reasons.append(f"quality: score {score:.2f} is below the floor {FLOOR_SCORE:.2f} of any real model: "
                       "the answers are unrelated to the prompts")
    return reasons
