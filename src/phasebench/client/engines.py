"""Which engine is behind a URL, and the exact-output-length knobs each one needs (and nothing more).

Detection asks a few cheap, read-only endpoints and keeps the evidence: ``/v1/models`` ``owned_by``
(vLLM "vllm", SGLang "sglang", llama.cpp "llamacpp", TGI "tgi"), the ``Server`` header, llama.cpp
``/props``, vLLM/SGLang/trtllm ``/version``, TGI ``/info``, Ollama ``/api/version``, and the prefix of
the names in ``/metrics``. The knob table: vLLM and SGLang need ``ignore_eos`` only (``min_tokens`` slowed
vLLM's decode 5–12% here); llama.cpp ``n_predict`` + ``ignore_eos``; TGI and Ollama can only cap the length
with ``max_tokens``; an engine not recognised gets every knob (the old, safe default).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

KNOWN = ("vllm", "sglang", "llamacpp", "tgi", "ollama", "trtllm", "lmdeploy")


@dataclass
class EngineInfo:
    name: str = "unknown"
    version: str | None = None
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def exact_length_knobs(engine: str, output_tokens: int) -> dict[str, Any]:
    """Extra request fields that make ``engine`` emit exactly ``output_tokens`` (``max_tokens`` is always
    sent). Engines that can only cap get nothing extra; ``length_met`` then tells whether it was reached."""
    if engine in ("vllm", "sglang", "trtllm", "lmdeploy"):
        return {"ignore_eos": True}
    if engine == "llamacpp":
        return {"ignore_eos": True, "n_predict": output_tokens}
    if engine in ("tgi", "ollama"):
        return {}
    return {"ignore_eos": True, "min_tokens": output_tokens, "n_predict": output_tokens}


CAP_ONLY = ("tgi", "ollama")


def from_owned_by(models_answer: Any) -> str | None:
    if not isinstance(models_answer, dict):
        return None
    for m in models_answer.get("data") or []:
        if not isinstance(m, dict):
            continue
        owner = str(m.get("owned_by") or "").lower().replace(".", "").replace("-", "").replace("_", "")
        for name in KNOWN:
            if name in owner:
                return name
        if owner in ("tensorrtllm", "nvidia"):
            return "trtllm"
        if owner == "library":  # Ollama's /v1/models
            return "ollama"
    return None


def max_model_len(models_answer: Any, model: str | None = None) -> int | None:
    """The served context length, where /v1/models says it (vLLM ``max_model_len``, llama.cpp ``meta.n_ctx_train``
    is the training context, not the server's, so it is not used)."""
    if not isinstance(models_answer, dict):
        return None
    for m in models_answer.get("data") or []:
        if isinstance(m, dict) and (model is None or m.get("id") == model):
            v = m.get("max_model_len") or m.get("context_length") or m.get("max_context_length")
            if isinstance(v, int) and v > 0:
                return v
    return None


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any, str, str]:
    """(status, JSON or None, Server header, text start) of a GET; status 0 when it failed."""
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=3)) as r:
            text = (await r.read()).decode("utf-8", "replace")
            try:
                import orjson

                data = orjson.loads(text) if text.lstrip()[:1] in ("{", "[") else None
            except ValueError:
                data = None
            return r.status, data, r.headers.get("Server", ""), text
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return 0, None, "", ""


async def detect_engine(session: aiohttp.ClientSession, root: str, models_answer: Any,
                        headers: dict[str, str] | None = None) -> EngineInfo:
    """Best guess of the engine at ``root`` (the server root, without ``/v1``), with the evidence."""
    h = headers or {}
    info = EngineInfo()
    votes: dict[str, int] = {}

    def vote(name: str, why: str, weight: int = 1) -> None:
        votes[name] = votes.get(name, 0) + weight
        info.evidence.append(why)

    owner = from_owned_by(models_answer)
    if owner:
        vote(owner, f"/v1/models owned_by says {owner}", 2)
    props, version, tgi_info, ollama, metrics = await asyncio.gather(
        _get(session, root + "/props", h), _get(session, root + "/version", h), _get(session, root + "/info", h),
        _get(session, root + "/api/version", h), _get(session, root + "/metrics", h))
    for _, _, server, _ in (props, version, tgi_info, ollama, metrics):
        if "llama.cpp" in server.lower():
            vote("llamacpp", f"Server header {server!r}")
            break
    if props[0] == 200 and isinstance(props[1], dict) and ("default_generation_settings" in props[1]
                                                          or "total_slots" in props[1]):
        vote("llamacpp", "/props has llama.cpp's default_generation_settings", 2)
        info.version = str(props[1].get("build_info") or "") or info.version
    ti = tgi_info[1] if tgi_info[0] == 200 and isinstance(tgi_info[1], dict) else {}
    if "model_id" in ti and ("max_input_tokens" in ti or "router" in ti or "max_total_tokens" in ti):
        vote("tgi", "/info has TGI's model_id/max_input_tokens", 2)
        info.version = str(ti.get("version") or "") or info.version
    if ollama[0] == 200 and isinstance(ollama[1], dict) and "version" in ollama[1] and len(ollama[1]) == 1:
        vote("ollama", "/api/version answers like Ollama")
        info.version = info.version or str(ollama[1]["version"])
    if version[0] == 200 and isinstance(version[1], dict) and "version" in version[1]:
        info.version = info.version or str(version[1]["version"])
        info.evidence.append(f"/version says {version[1]['version']}")
    if metrics[0] == 200:
        text = metrics[3]
        for name, prefix in (("vllm", "vllm:"), ("sglang", "sglang:"), ("llamacpp", "llamacpp:"),
                             ("tgi", "tgi_"), ("trtllm", "trtllm")):
            if prefix in text:
                vote(name, f"/metrics names start with {prefix}", 2)
                break
    if votes:
        info.name = max(votes, key=lambda k: votes[k])
    return info
