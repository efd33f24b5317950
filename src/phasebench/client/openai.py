"""The OpenAI-compatible protocol: request bodies and what each streamed event means.

Engine quirks live here and nowhere else:
- exact output length: ``ignore_eos`` + ``min_tokens`` (vLLM, SGLang, llama.cpp), ``n_predict`` (llama.cpp);
  TGI and Ollama only cap, so ``length_met`` tells whether the length was reached;
- usage: on the last chunk with ``finish_reason`` (llama.cpp /v1/completions, vLLM) or in a separate
  chunk with ``choices: []`` (OpenAI, llama.cpp chat);
- reasoning deltas: ``reasoning_content`` (vLLM, DeepSeek, llama.cpp) or ``reasoning`` (Ollama, OpenRouter);
- native timing: llama.cpp ``timings``, Ollama ``prompt_eval_duration``/``eval_duration`` (ns), TGI ``details``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..spec import Endpoint


@dataclass(slots=True)
class Prompt:
    """One request's content, from the workload."""

    text: str | None = None
    messages: list[dict[str, Any]] | None = None
    input_tokens: int | None = None  # intended / measured by the workload's tokenizer
    output_tokens: int = 64
    probe: str | None = None  # a quality probe (phasebench.quality): its answer text is kept, never length-forced
    logprobs: int = 0  # ask for this many top logprobs per generated token (quality probes)


def request_body(
    endpoint: Endpoint, model: str, prompt: Prompt, *, exact_output: bool, temperature: float
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": prompt.output_tokens,
        "temperature": 0.0 if prompt.probe is not None else temperature,  # probes are always greedy
    }
    if endpoint == Endpoint.chat:
        body["messages"] = prompt.messages or [{"role": "user", "content": prompt.text or ""}]
    else:
        body["prompt"] = prompt.text if prompt.text is not None else _flatten(prompt.messages)
    if prompt.logprobs:  # completions: top-N per token; chat: a flag and the count
        if endpoint == Endpoint.chat:
            body["logprobs"], body["top_logprobs"] = True, prompt.logprobs
        else:
            body["logprobs"] = prompt.logprobs
    if exact_output and prompt.probe is None:
        body["ignore_eos"] = True  # vLLM, SGLang, llama.cpp
        body["min_tokens"] = prompt.output_tokens  # vLLM, SGLang
        body["n_predict"] = prompt.output_tokens  # llama.cpp native name
    # llama.cpp: per-token timings in every chunk cost nothing and give server-side phases.
    body["timings_per_token"] = False
    return body


def _flatten(messages: list[dict[str, Any]] | None) -> str:
    return "\n".join(str(m.get("content", "")) for m in (messages or []))


def completions_path(endpoint: Endpoint) -> str:
    return "/chat/completions" if endpoint == Endpoint.chat else "/completions"


@dataclass(slots=True)
class Delta:
    """What one streamed event carried."""

    text: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None
    error: str | None = None
    stamp: int | None = None  # the in-repo mock server's send time (perf_counter_ns), for self-tests
    logprobs: list[Any] | None = None  # [token, logprob, [[top, logprob], ...]] per token, when the server sent them


def parse_event(data: bytes) -> Delta:
    """Decode one ``data:`` payload. Raises ``ValueError`` on a payload that is not a JSON object."""
    obj = orjson.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("event is not a JSON object")
    d = Delta()
    err = obj.get("error")
    if err:
        d.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        return d
    choices = obj.get("choices")
    if choices:
        c = choices[0]
        delta = c.get("delta")
        if delta is not None:  # chat
            d.text = delta.get("content") or ""
            d.reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        else:
            d.text = c.get("text") or ""
        d.finish_reason = c.get("finish_reason")
        if c.get("logprobs"):
            d.logprobs = token_logprobs(c["logprobs"])
    stamp = obj.get("pb_ns")
    if stamp is not None:
        d.stamp = stamp
    usage = obj.get("usage")
    if usage:
        d.usage = usage
    timings = obj.get("timings")
    if timings:
        d.timing = {k: timings[k] for k in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms") if k in timings}
    if "eval_duration" in obj:  # Ollama native final chunk
        d.timing = {
            "prompt_n": obj.get("prompt_eval_count"),
            "prompt_ms": (obj.get("prompt_eval_duration") or 0) / 1e6,
            "predicted_n": obj.get("eval_count"),
            "predicted_ms": (obj.get("eval_duration") or 0) / 1e6,
        }
    details = obj.get("details")
    if isinstance(details, dict) and "generated_tokens" in details:  # TGI
        d.timing = {"predicted_n": details.get("generated_tokens")}
    return d


def token_logprobs(lp: Any) -> list[Any]:
    """Per-token logprobs in one shape, from either wire format: ``{"content": [{token, logprob, top_logprobs:
    [{token, logprob}]}]}`` (llama.cpp, OpenAI chat) or ``{"tokens", "token_logprobs", "top_logprobs": [{tok: lp}]}``
    (OpenAI legacy completions, vLLM)."""
    out: list[Any] = []
    if not isinstance(lp, dict):
        return out
    content = lp.get("content")
    if isinstance(content, list):
        for t in content:
            if isinstance(t, dict) and "token" in t:
                top = [[x.get("token", ""), x.get("logprob")] for x in t.get("top_logprobs") or [] if isinstance(x, dict)]
                out.append([t["token"], t.get("logprob"), top])
        return out
    tokens, lps, tops = lp.get("tokens") or [], lp.get("token_logprobs") or [], lp.get("top_logprobs") or []
    for i, tok in enumerate(tokens):
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        out.append([tok, lps[i] if i < len(lps) else None, [[k, v] for k, v in top.items()]])
    return out


def error_message(body: bytes, limit: int = 300) -> str:
    """The human part of an error body (OpenAI ``{"error": {"message": ...}}`` or plain text), capped."""
    try:
        obj = orjson.loads(body)
        if isinstance(obj, dict):
            err = obj.get("error", obj.get("detail", obj.get("message")))
            if isinstance(err, dict):
                err = err.get("message", err)
            if err is not None:
                return str(err)[:limit]
    except orjson.JSONDecodeError:
        pass
    return body[:limit].decode("utf-8", "replace").strip()
