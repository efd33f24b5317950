"""The streaming HTTP client: one shared aiohttp connector, nanosecond stamps taken as bytes arrive.

The per-chunk path is kept short: stamp, find event boundaries in bytes (``SSEParser``), decode the small
JSON payload, append two ints. Token counts per chunk are settled once the stream ends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from ..records import RequestRecord
from ..spec import Endpoint
from .openai import Prompt, completions_path, error_message, parse_event, request_body
from .sse import SSEParser

now_ns = time.perf_counter_ns


@dataclass
class ClientConfig:
    base_url: str
    model: str
    endpoint: Endpoint = Endpoint.completions
    api_key: str | None = None  # held in memory only; never written
    exact_output: bool = True
    temperature: float = 0.0
    timeout: float = 600.0
    stall_timeout: float = 60.0
    max_connections: int = 256
    extra_body: dict[str, Any] = field(default_factory=dict)


# Idle pooled connections are dropped after this long: below the 5 s keep-alive of llama.cpp's httplib and
# uvicorn (vLLM, SGLang), so the pool rarely hands out a connection the server has already closed.
KEEPALIVE_S = 4.0
MAX_STALE_RETRIES = 8


def make_connector(limit: int) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=300, keepalive_timeout=KEEPALIVE_S)


class Client:
    """Sends one request at a time per call; shares one connection pool across all calls."""

    def __init__(self, cfg: ClientConfig, t0_ns: int = 0) -> None:
        self.cfg = cfg
        self.t0 = t0_ns
        self.url = cfg.base_url.rstrip("/") + completions_path(cfg.endpoint)
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if cfg.api_key:
            self._headers["Authorization"] = f"Bearer {cfg.api_key}"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Client":
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout, sock_read=self.cfg.stall_timeout, sock_connect=30)
        self._session = aiohttp.ClientSession(
            connector=make_connector(self.cfg.max_connections),
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "phasebench"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def new_record(self, index: int, scheduled_ns: int, prompt: Prompt) -> RequestRecord:
        return RequestRecord(
            index=index,
            request_id=uuid.uuid4().hex,
            scheduled_ns=scheduled_ns,
            input_tokens=prompt.input_tokens,
            expected_output_tokens=prompt.output_tokens,
            probe=prompt.probe,
        )

    async def send(self, rec: RequestRecord, prompt: Prompt) -> RequestRecord:
        """Stream one request, filling ``rec`` in place. Never raises for server or network faults.

        A keep-alive connection the server already closed fails while the request is being written, before
        any byte comes back; that is the pool's fault, not the server's, so it is re-sent on another
        connection (up to ``MAX_STALE_RETRIES`` times, counted in ``rec.retries``). Latency still counts from the scheduled time.
        """
        stale = await self._send_once(rec, prompt)
        while stale and rec.headers_ns is None and rec.retries < MAX_STALE_RETRIES:
            rec.retries += 1
            rec.error = rec.error_type = None
            rec.end_ns = None
            stale = await self._send_once(rec, prompt)
        return rec

    async def _send_once(self, rec: RequestRecord, prompt: Prompt) -> bool:
        """One attempt; returns True when it failed on a connection that was stale before any byte came back."""
        assert self._session is not None, "use 'async with Client(...)'"
        cfg = self.cfg
        body = request_body(cfg.endpoint, cfg.model, prompt, exact_output=cfg.exact_output, temperature=cfg.temperature)
        if cfg.extra_body:
            body.update(cfg.extra_body)
        payload = orjson.dumps(body)
        headers = dict(self._headers)
        headers["X-Request-Id"] = rec.request_id
        t0 = self.t0
        chunk_chars: list[int] = []
        parser = SSEParser()
        done = False
        stale = False
        keep = prompt.probe is not None  # a quality probe: its text (and logprobs) are kept
        texts: list[str] = []
        lps: list = []
        try:
            rec.sent_ns = now_ns() - t0
            async with self._session.post(self.url, data=payload, headers=headers) as resp:
                rec.headers_ns = now_ns() - t0
                rec.status = resp.status
                if resp.status != 200:
                    body_bytes = await resp.content.read(4096)
                    rec.end_ns = now_ns() - t0
                    rec.error_type = _http_error_type(resp.status)
                    rec.error = f"HTTP {resp.status}: {error_message(body_bytes)}"
                    return False
                content = resp.content
                while not done:
                    data = await content.readany()
                    t = now_ns() - t0
                    if not data:
                        events = parser.flush()
                        if not events:
                            break
                    else:
                        if rec.first_byte_ns is None:
                            rec.first_byte_ns = t
                        events = parser.feed(data)
                    for etype, ev in events:
                        if ev == b"[DONE]":
                            done = True
                            break
                        try:
                            d = parse_event(ev)
                        except ValueError:
                            rec.error_type = "malformed"
                            rec.error = f"malformed event: {ev[:120].decode('utf-8', 'replace')!r}"
                            rec.end_ns = t
                            return False
                        if d.error or etype == b"error":
                            rec.error_type = "server_error"
                            rec.error = f"server error in stream: {d.error or ev[:200].decode('utf-8', 'replace')}"
                            rec.end_ns = t
                            return False
                        piece = d.text or d.reasoning
                        if piece:
                            if rec.first_token_ns is None:
                                rec.first_token_ns = t
                            if d.text and rec.first_answer_ns is None:
                                rec.first_answer_ns = t
                            if not d.text:
                                rec.reasoning_chunks += 1
                            rec.chunk_ns.append(t)
                            chunk_chars.append(len(piece))
                            if d.stamp is not None:
                                if rec.server_stamps is None:
                                    rec.server_stamps = []
                                rec.server_stamps.append(d.stamp - t0)
                            rec.last_token_ns = t
                        if keep:
                            texts.append(d.text)
                            if d.logprobs:
                                lps.extend(d.logprobs)
                        if d.finish_reason:
                            rec.finish_reason = d.finish_reason
                        if d.usage:
                            rec.prompt_tokens = d.usage.get("prompt_tokens", rec.prompt_tokens)
                            if d.usage.get("completion_tokens") is not None:
                                rec.output_tokens = d.usage["completion_tokens"]
                        if d.timing:
                            rec.server_timing = d.timing
                rec.end_ns = now_ns() - t0
                if not done and rec.finish_reason is None:
                    rec.error_type = "dropped"
                    rec.error = "stream ended before [DONE] or a finish_reason"
        except asyncio.TimeoutError:
            rec.end_ns = now_ns() - t0
            if rec.first_byte_ns is not None:
                rec.error_type, rec.error = "stall", f"no bytes for {cfg.stall_timeout:g} s (or total > {cfg.timeout:g} s)"
            else:
                rec.error_type, rec.error = "timeout", f"no answer within the timeout ({cfg.timeout:g} s)"
        except asyncio.CancelledError:
            rec.end_ns = now_ns() - t0
            rec.error_type, rec.error = "cancelled", "run interrupted"
            raise
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionResetError) as e:
            rec.end_ns = now_ns() - t0
            rec.error_type = "dropped" if rec.headers_ns is not None else "connection"
            rec.error = f"connection dropped: {type(e).__name__}: {e}"[:300]
            stale = rec.headers_ns is None
        except aiohttp.ClientError as e:
            rec.end_ns = now_ns() - t0
            rec.error_type, rec.error = "connection", f"{type(e).__name__}: {e}"[:300]
            # "Can not write request body" / reset while writing on a reused connection: a stale pool entry
            stale = isinstance(e, aiohttp.ClientOSError) and not isinstance(e, aiohttp.ClientConnectorError)
        finally:
            settle_tokens(rec, chunk_chars)
            if keep:
                rec.text, rec.logprobs = "".join(texts), lps or None
        return stale


def _http_error_type(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"


def settle_tokens(rec: RequestRecord, chunk_chars: list[int]) -> None:
    """Give each chunk its token count once the total is known.

    Chunks are not tokens (speculative decoding, stream intervals and parsers bundle them). When the server's
    usage gives N output tokens over C chunks with N != C, the N tokens are split across chunks in proportion
    to their characters (largest remainder), every chunk keeping at least one.
    """
    n_chunks = len(rec.chunk_ns)
    rec.output_tokens_client = n_chunks
    if rec.output_tokens is None:
        rec.output_tokens = n_chunks if n_chunks or rec.ok else None
        rec.output_tokens_source = "chunks" if n_chunks else None
    else:
        rec.output_tokens_source = "usage"
    total = rec.output_tokens or 0
    if n_chunks == 0:
        rec.chunk_tokens = []
    elif total <= n_chunks:
        rec.chunk_tokens = [1] * n_chunks
    else:
        extra = total - n_chunks
        total_chars = sum(chunk_chars)
        weights = chunk_chars if total_chars else [1] * n_chunks
        denom = total_chars or n_chunks
        shares = [extra * w / denom for w in weights]
        base = [int(s) for s in shares]
        left = extra - sum(base)
        order = sorted(range(n_chunks), key=lambda i: shares[i] - base[i], reverse=True)
        for i in order[:left]:
            base[i] += 1
        rec.chunk_tokens = [1 + b for b in base]
    if rec.expected_output_tokens is not None and rec.output_tokens is not None:
        rec.length_met = rec.output_tokens >= rec.expected_output_tokens
