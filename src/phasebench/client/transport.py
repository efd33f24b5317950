"""The streaming HTTP client: one shared aiohttp connector, nanosecond stamps taken as bytes arrive.

The per-chunk path is kept short: stamp, find event boundaries in bytes (``SSEParser``), decode the small
JSON payload, append two ints. Token counts per chunk are settled once the stream ends.

Whatever the server sends, a request ends as a record: a wrong-shape event (``malformed``), an event past
``max_event_bytes`` (``oversize``), a compression it cannot decode (``encoding``) or an unexpected exception
in the client (``client_error``) fails that request alone. Only ``CancelledError`` leaves ``Client.send``.
The API key's value is scrubbed (``***``) from every server text the record keeps.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import aiohttp
import orjson
from yarl import URL

from ..records import RequestRecord
from ..spec import Endpoint
from .openai import EventShapeError, Prompt, completions_path, error_message, parse_event, request_body
from .sse import DEFAULT_MAX_EVENT_BYTES, EventTooLarge, SSEParser

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
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into every request body (--extra-body)
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # sent on every request (--header); secrets
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES  # one SSE event larger than this fails its request ("oversize")
    transport: str = "aiohttp"  # "aiohttp" (this module) or "raw" (client/raw.py: kernel receive timestamps)
    engine: str = "unknown"  # the detected engine (client/engines.py): which exact-length knobs it is sent
    collect_text: bool = False  # keep each answer's text (Client.take_text): multi-turn conversations need it


# Idle pooled connections are dropped after this long: below the 5 s keep-alive of llama.cpp's httplib and
# uvicorn (vLLM, SGLang), so the pool rarely hands out a connection the server has already closed.
KEEPALIVE_S = 4.0
MAX_STALE_RETRIES = 8


def make_connector(limit: int) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=300, keepalive_timeout=KEEPALIVE_S)


class Client:
    """Sends one request at a time per call; shares one connection pool across all calls."""

    transport = "aiohttp"

    def __init__(self, cfg: ClientConfig, t0_ns: int = 0) -> None:
        self.cfg = cfg
        self.t0 = t0_ns
        self.url = cfg.base_url.rstrip("/") + completions_path(cfg.endpoint)
        # identity: a compressed stream would be stamped when a compressed block arrives, not each event; a
        # server that compresses anyway is decoded (gzip/deflate) or refused by name (anything else)
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream",
                         "Accept-Encoding": "identity", **cfg.headers}
        if cfg.api_key:
            self._headers["Authorization"] = f"Bearer {cfg.api_key}"
        self._secret = secrets_of(cfg)
        self._session: aiohttp.ClientSession | None = None
        # request_id -> the answer's text pieces; None (the default) costs one test per token-bearing event
        self.texts: dict[str, list[str]] | None = {} if cfg.collect_text else None

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
            conversation=prompt.conversation,
            turn=prompt.turn,
        )

    def take_text(self, rec: RequestRecord) -> str:
        """The answer text of ``rec`` as the server sent it (``collect_text`` only), forgotten once taken."""
        return "".join(self.texts.pop(rec.request_id, ())) if self.texts is not None else ""

    async def send(self, rec: RequestRecord, prompt: Prompt) -> RequestRecord:
        """Stream one request, filling ``rec`` in place. Raises nothing but ``CancelledError``.

        A keep-alive connection the server already closed fails while the request is being written, before
        any byte comes back; that is the pool's fault, not the server's, so it is re-sent on another
        connection (up to ``MAX_STALE_RETRIES`` times, counted in ``rec.retries``). Latency still counts from the scheduled time.
        """
        try:
            stale = await self._send_once(rec, prompt)
            while stale and rec.headers_ns is None and rec.retries < MAX_STALE_RETRIES:
                rec.retries += 1
                rec.error = rec.error_type = None
                rec.end_ns = None
                stale = await self._send_once(rec, prompt)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the last guard: _send_once already classifies what it knows
            _client_error(rec, e, self.t0, self._secret)
        return rec

    async def _send_once(self, rec: RequestRecord, prompt: Prompt) -> bool:
        """One attempt; returns True when it failed on a connection that was stale before any byte came back."""
        assert self._session is not None, "use 'async with Client(...)'"
        cfg = self.cfg
        t0 = self.t0
        chunk_chars: list[int] = []
        stale = False
        try:
            body = request_body(cfg.endpoint, cfg.model, prompt, exact_output=cfg.exact_output, temperature=cfg.temperature,
                                engine=cfg.engine)
            if cfg.extra_body:
                body.update(cfg.extra_body)
            payload = orjson.dumps(body)
            headers = dict(self._headers)
            headers["X-Request-Id"] = rec.request_id
            rec.sent_ns = now_ns() - t0
            async with self._session.post(self.url, data=payload, headers=headers) as resp:
                rec.headers_ns = now_ns() - t0
                rec.status = resp.status
                coding = resp.headers.get("Content-Encoding", "").strip().lower()
                if resp.status != 200:
                    body_bytes = _decode_small(await resp.content.read(4096), coding)
                    for secret in self._secret:
                        body_bytes = body_bytes.replace(secret.encode(), b"***")
                    rec.end_ns = now_ns() - t0
                    rec.error_type = _http_error_type(resp.status)
                    rec.error = f"HTTP {resp.status}: {error_message(body_bytes)}"
                    return False
                decoder: _Decoder | None = None
                if coding not in ("", "identity"):
                    if coding not in _Decoder.CODINGS:
                        rec.end_ns = now_ns() - t0
                        rec.error_type = "encoding"
                        rec.error = (f"the server sent Content-Encoding {coding[:40]!r}, which phasebench does not "
                                     "decode (it asks for identity; gzip and deflate are decoded)")
                        return False
                    decoder = _Decoder(coding)
                await self._read_stream(resp.content, rec, chunk_chars, SSEParser(cfg.max_event_bytes), decoder)
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
        except EventTooLarge:
            rec.end_ns = now_ns() - t0
            rec.error_type = "oversize"
            rec.error = (f"an event grew past {cfg.max_event_bytes:,} bytes (max_event_bytes); "
                         "the request was stopped there")
        except zlib.error as e:
            rec.end_ns = now_ns() - t0
            rec.error_type, rec.error = "encoding", f"the compressed stream is corrupt: {e}"[:300]
        except Exception as e:  # noqa: BLE001 - a bug or an odd answer must cost one request, never the run
            _client_error(rec, e, t0, self._secret)
        finally:
            settle_tokens(rec, chunk_chars)
            _scrub_record(rec, self._secret)
        return stale

    async def _read_stream(self, content: aiohttp.StreamReader, rec: RequestRecord, chunk_chars: list[int],
                           parser: SSEParser, decoder: "_Decoder | None") -> None:
        """Read events until ``[DONE]``, a finish at the end of the stream, or a failed event (``rec.error``)."""
        t0 = self.t0
        while True:
            data = await content.readany()
            t = now_ns() - t0  # stamped as the (possibly compressed) bytes arrive, before any decoding
            if not data:
                events = parser.feed(decoder.flush()) if decoder is not None else []
                events.extend(parser.flush())
                if events and self._events(events, t, rec, chunk_chars):
                    return
                break
            if rec.first_byte_ns is None:
                rec.first_byte_ns = t
            if decoder is None:
                if self._events(parser.feed(data), t, rec, chunk_chars):
                    return
            else:
                for piece in decoder.decode(data):
                    if self._events(parser.feed(piece), t, rec, chunk_chars):
                        return
        rec.end_ns = now_ns() - t0
        if rec.finish_reason is None:
            rec.error_type = "dropped"
            rec.error = "stream ended before [DONE] or a finish_reason"

    def _events(self, events: list[tuple[bytes, bytes]], t: int, rec: RequestRecord, chunk_chars: list[int]) -> bool:
        """Apply one read's events to ``rec``; True when the request is over ([DONE] or a failure)."""
        for etype, ev in events:
            if ev == b"[DONE]":
                rec.end_ns = now_ns() - self.t0
                return True
            try:
                d = parse_event(ev)
            except EventShapeError as e:
                rec.error_type, rec.error, rec.end_ns = "malformed", f"malformed event: {e}", t
                return True
            except ValueError as e:
                rec.error_type, rec.end_ns = "malformed", t
                rec.error = f"malformed event (not JSON: {e}): {_excerpt(ev, self._secret)!r}"
                return True
            if d.error or etype == b"error":
                rec.error_type = "server_error"
                rec.error = f"server error in stream: {d.error or _excerpt(ev, self._secret, 200)}"
                rec.end_ns = t
                return True
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
                    rec.server_stamps.append(d.stamp - self.t0)
                rec.last_token_ns = t
                if d.text and self.texts is not None:
                    self.texts.setdefault(rec.request_id, []).append(d.text)
            if rec.probe is not None:  # a quality probe: its text and logprobs are kept (short answers)
                rec.text = (rec.text or "") + d.text
                if d.logprobs:
                    rec.logprobs = (rec.logprobs or []) + d.logprobs
            if d.finish_reason:
                rec.finish_reason = d.finish_reason
            if d.prompt_tokens is not None:
                rec.prompt_tokens = d.prompt_tokens
            if d.completion_tokens is not None:
                rec.output_tokens = d.completion_tokens
            if d.cached_tokens is not None:
                rec.cached_tokens = d.cached_tokens
            if d.timing:
                rec.server_timing = {**rec.server_timing, **d.timing} if rec.server_timing else d.timing
        return False


class _Decoder:
    """Incremental gzip/deflate decoding of a stream, in pieces of at most ``PIECE`` bytes (a small
    compressed read can expand a thousandfold; the SSE parser's size cap then stops it)."""

    CODINGS = ("gzip", "x-gzip", "deflate")
    PIECE = 1 << 20

    def __init__(self, coding: str) -> None:
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding != "deflate" else None
        self._head = b""

    def decode(self, data: bytes) -> Iterable[bytes]:
        if self._z is None:  # deflate: zlib-wrapped (RFC 1950, as specified) or raw (as many servers send)
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            zlib_header = (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            self._z = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        z = self._z
        if z.eof:
            return
        out = z.decompress(data, self.PIECE)
        if out:
            yield out
        while z.unconsumed_tail and not z.eof:
            out = z.decompress(z.unconsumed_tail, self.PIECE)
            if out:
                yield out

    def flush(self) -> bytes:
        if self._z is None:
            return b""
        return self._z.flush() if not self._z.eof else b""


def _decode_small(body: bytes, coding: str) -> bytes:
    """An error body as text: decoded when it came compressed (up to 4 KiB), else as it came."""
    if coding in ("gzip", "x-gzip", "deflate"):
        try:
            return zlib.decompressobj(47 if coding != "deflate" else -zlib.MAX_WBITS).decompress(body, 4096)
        except zlib.error:
            pass
    return body


def _http_error_type(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"


def _client_error(rec: RequestRecord, e: BaseException, t0: int, secrets: tuple[str, ...]) -> None:
    rec.end_ns = now_ns() - t0
    rec.error_type = "client_error"
    rec.error = scrub(f"client error: {type(e).__name__}: {e}"[:300], secrets)


def _excerpt(ev: bytes, secrets: tuple[str, ...], limit: int = 120) -> str:
    """The start of an event, as text, with the secrets removed before it is cut (so no part of one is kept)."""
    text = ev[: limit + max((len(x) for x in secrets), default=0)].decode("utf-8", "replace")
    return scrub(text, secrets)[:limit]


def secrets_of(cfg: ClientConfig) -> tuple[str, ...]:
    """What must never be stored: the API key, the values of ``--header``, and a password in the URL (also as
    the Basic credentials aiohttp sends for it)."""
    out = [cfg.api_key] if cfg.api_key else []
    out += cfg.headers.values()
    try:
        url = URL(cfg.base_url)
        if url.password:
            out.append(url.password)
            out.append(base64.b64encode(f"{url.user or ''}:{url.password}".encode()).decode())
    except (ValueError, TypeError):
        pass
    return tuple(sorted({x for x in out if len(x) >= 4}, key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...] | str | None) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``, and a start of one cut off at the
    very end (a text truncated mid-secret) too."""
    if isinstance(secrets, str):
        secrets = (secrets,)
    if not secrets or not text:
        return text
    for secret in secrets:
        text = text.replace(secret, "***")
    for secret in secrets:
        for k in range(min(len(secret) - 1, len(text)), 3, -1):
            if text.endswith(secret[:k]):
                return text[:-k] + "***"
    return text


def _scrub_record(rec: RequestRecord, secret: tuple[str, ...]) -> None:
    if rec.error:
        rec.error = scrub(rec.error, secret)
    if rec.finish_reason is not None:
        rec.finish_reason = scrub(rec.finish_reason[:64], secret)


def settle_tokens(rec: RequestRecord, chunk_chars: list[int]) -> None:
    """Give each chunk its token count once the total is known.

    Chunks are not tokens (speculative decoding, stream intervals and parsers bundle them). When the server's
    usage gives N output tokens over C chunks with N != C, the N tokens are split across chunks in proportion
    to their characters (largest remainder, exact integer arithmetic), every chunk keeping at least one. The
    work is per chunk, never per token: N may be any size.
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
        weights = chunk_chars if len(chunk_chars) == n_chunks and sum(chunk_chars) else [1] * n_chunks
        denom = sum(weights)
        base = [extra * w // denom for w in weights]
        left = extra - sum(base)  # 0 <= left < n_chunks
        order = sorted(range(n_chunks), key=lambda i: (extra * weights[i]) % denom, reverse=True)
        for i in order[:left]:
            base[i] += 1
        rec.chunk_tokens = [1 + b for b in base]
    if rec.expected_output_tokens is not None and rec.output_tokens is not None:
        rec.length_met = rec.output_tokens >= rec.expected_output_tokens
