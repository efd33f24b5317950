"""The OpenAI-compatible protocol: request bodies and what each streamed event means.

Engine quirks live here and nowhere else:
- exact output length: the detected engine's own knobs only (``client/engines.py``: vLLM/SGLang ``ignore_eos``,
  llama.cpp ``ignore_eos`` + ``n_predict``, an unknown engine all three with ``min_tokens``);
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
from .engines import exact_length_knobs


@dataclass(slots=True)
class Prompt:
    """One request's content, from the workload."""

    text: str | None = None
    messages: list[dict[str, Any]] | None = None
    input_tokens: int | None = None  # intended / measured by the workload's tokenizer
    output_tokens: int = 64
    probe: str | None = None  # a quality probe (phasebench.quality): its answer text is kept, never length-forced
    logprobs: int = 0  # ask for this many top logprobs per generated token (quality probes)
    conversation: int | None = None  # multi-turn workloads and traces: which conversation, which turn (0-based)
    turn: int | None = None


def request_body(
    endpoint: Endpoint, model: str, prompt: Prompt, *, exact_output: bool, temperature: float, engine: str = "unknown"
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
    if exact_output and prompt.probe is None:  # only the knobs the detected engine needs (client/engines.py)
        body.update(exact_length_knobs(engine, prompt.output_tokens))
    # llama.cpp: per-token timings in every chunk cost nothing and give server-side phases.
    body["timings_per_token"] = False
    return body


def _flatten(messages: list[dict[str, Any]] | None) -> str:
    return "\n".join(str(m.get("content", "")) for m in (messages or []))


def completions_path(endpoint: Endpoint) -> str:
    return "/chat/completions" if endpoint == Endpoint.chat else "/completions"


@dataclass(slots=True)
class Delta:
    """What one streamed event carried; every field has the type it names (``parse_event`` checks)."""

    text: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None  # usage.prompt_tokens
    completion_tokens: int | None = None  # usage.completion_tokens
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens, llama.cpp timings.cache_n
    timing: dict[str, int | float] | None = None  # the engine's own timing, normalised keys (see TIMING_KEYS)
    error: str | None = None
    stamp: int | None = None  # the in-repo mock server's send time (perf_counter_ns), for self-tests
    logprobs: list[Any] | None = None  # [token, logprob, [[top, logprob], ...]] per token, when the server sent them


# Normalised server-timing keys: llama.cpp ``timings`` (and Ollama's durations, TGI's count) keep llama.cpp's
# names; vLLM's per-request ``metrics`` (``--enable-per-request-metrics``) get their own.
VLLM_METRICS = {
    "time_to_first_token_ms": "ttft_ms",
    "queue_time_ms": "queue_ms",
    "generation_time_ms": "generation_ms",
    "mean_itl_ms": "itl_ms",
    "tokens_per_second": "tokens_per_s",
}
TIMING_KEYS = ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms", *VLLM_METRICS.values())
MAX_COUNT = 10**8  # a token count above this (or below 0) is a server bug, not a measurement
MAX_ERROR_CHARS = 300


class EventShapeError(ValueError):
    """An event that is JSON but not the shape the protocol promises; the message names the field."""


def _kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _bad(path: str, v: object, expected: str) -> EventShapeError:
    shown = orjson.dumps(v)[:40].decode("utf-8", "replace") if not isinstance(v, (dict, list)) else ""
    return EventShapeError(f"{path} is {_kind(v)}{f' ({shown})' if shown else ''}, expected {expected}")


def _str(obj: dict[str, Any], key: str, path: str) -> str | None:
    v = obj.get(key)
    if v is None or type(v) is str:
        return v
    raise _bad(path + key, v, "a string")


def _count(obj: dict[str, Any], key: str, path: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if type(v) is not int:
        raise _bad(path + key, v, "an integer")
    if not 0 <= v <= MAX_COUNT:
        raise EventShapeError(f"{path}{key} is {v}, expected an integer in [0, {MAX_COUNT}]")
    return v


def _number(obj: dict[str, Any], key: str, path: str) -> int | float | None:
    v = obj.get(key)
    if v is None:
        return None
    if type(v) is not float and type(v) is not int:
        raise _bad(path + key, v, "a number")
    if v < 0:
        raise EventShapeError(f"{path}{key} is {v}, expected a number >= 0")
    return v


def _object(obj: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
    v = obj.get(key)
    if v is None or type(v) is dict:
        return v
    raise _bad(path + key, v, "an object")


def parse_event(data: bytes) -> Delta:
    """Decode one ``data:`` payload, whatever it holds.

    Returns a ``Delta`` whose fields have their declared types, or raises ``ValueError``: ``orjson``'s
    ``JSONDecodeError`` for text that is not JSON, ``EventShapeError`` (naming the field and what was
    expected) for JSON of the wrong shape. Nothing else escapes, for any input.
    """
    obj = orjson.loads(data)
    if type(obj) is not dict:
        raise _bad("the event", obj, "an object")
    d = Delta()
    err = obj.get("error")
    if err:
        msg = err.get("message") if type(err) is dict else err
        if type(msg) is not str:
            msg = orjson.dumps(msg if msg is not None else err).decode()
        d.error = msg[:MAX_ERROR_CHARS] or "(empty error message)"
        return d
    choices = obj.get("choices")
    if choices:
        if type(choices) is not list:
            raise _bad("choices", choices, "an array")
        c = choices[0]
        if type(c) is not dict:
            raise _bad("choices[0]", c, "an object")
        delta = c.get("delta")
        if delta is not None:  # chat
            if type(delta) is not dict:
                raise _bad("choices[0].delta", delta, "an object")
            d.text = _str(delta, "content", "choices[0].delta.") or ""
            d.reasoning = (_str(delta, "reasoning_content", "choices[0].delta.")
                           or _str(delta, "reasoning", "choices[0].delta.") or "")
        else:
            d.text = _str(c, "text", "choices[0].") or ""
        d.finish_reason = _str(c, "finish_reason", "choices[0].")
        if c.get("logprobs"):
            d.logprobs = token_logprobs(c["logprobs"])
    elif choices is not None and type(choices) is not list:
        raise _bad("choices", choices, "an array")
    stamp = obj.get("pb_ns")
    if stamp is not None:
        if type(stamp) is not int:
            raise _bad("pb_ns", stamp, "an integer")
        d.stamp = stamp
    usage = obj.get("usage")
    if usage is not None:
        if type(usage) is not dict:
            raise _bad("usage", usage, "an object")
        d.prompt_tokens = _count(usage, "prompt_tokens", "usage.")
        d.completion_tokens = _count(usage, "completion_tokens", "usage.")
        details = _object(usage, "prompt_tokens_details", "usage.")
        if details:
            d.cached_tokens = _count(details, "cached_tokens", "usage.prompt_tokens_details.")
    if "timings" in obj or "metrics" in obj or "eval_duration" in obj or "details" in obj:
        _timing(obj, d)
    return d


def _timing(obj: dict[str, Any], d: Delta) -> None:
    """The engines' own timing, from the rare chunks that carry it (kept off the per-chunk path)."""
    t: dict[str, int | float] = {}
    timings = _object(obj, "timings", "")
    if timings:  # llama.cpp
        for k in ("prompt_n", "predicted_n"):
            if (n := _count(timings, k, "timings.")) is not None:
                t[k] = n
        for k in ("prompt_ms", "predicted_ms"):
            if (x := _number(timings, k, "timings.")) is not None:
                t[k] = x
        cache_n = _count(timings, "cache_n", "timings.")
        if cache_n is not None and d.cached_tokens is None:
            d.cached_tokens = cache_n
    metrics = _object(obj, "metrics", "")
    if metrics:  # vLLM --enable-per-request-metrics, on the usage chunk
        for src, dst in VLLM_METRICS.items():
            if (x := _number(metrics, src, "metrics.")) is not None:
                t[dst] = x
    if "eval_duration" in obj:  # Ollama native final chunk (durations in ns)
        for src, dst in (("prompt_eval_count", "prompt_n"), ("eval_count", "predicted_n")):
            if (n := _count(obj, src, "")) is not None:
                t[dst] = n
        for src, dst in (("prompt_eval_duration", "prompt_ms"), ("eval_duration", "predicted_ms")):
            t[dst] = (_number(obj, src, "") or 0) / 1e6
    details = _object(obj, "details", "")
    if details and "generated_tokens" in details:  # TGI
        if (n := _count(details, "generated_tokens", "details.")) is not None:
            t["predicted_n"] = n
    if t:
        d.timing = t


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
    tokens, lps, tops = (x if isinstance(x, list) else [] for x in
                         (lp.get("tokens"), lp.get("token_logprobs"), lp.get("top_logprobs")))
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
