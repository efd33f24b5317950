"""``RawClient``: the same client as ``transport.Client`` (request bodies, event handling, error types, secret
scrubbing, retries of stale connections), on ``rawhttp``'s sockets: every chunk is stamped with the kernel's
receive time, not the time the event loop got round to reading it.

Used for plain ``http://`` targets on Linux (``--transport auto``, the default, or ``raw``); ``https://``,
other platforms and ``--transport aiohttp`` use ``transport.Client``. The manifest records which ran.

Per request it also keeps the client's own read delay (read time − kernel stamp, one value per token-bearing
read) and how many token events shared their read with a later token event (``coalesced_reads``): when the client
reads late, the kernel has merged the waiting segments in its receive queue and stamps the whole read with
the *last* one (measured here: ten 2 ms-apart events read 50 ms late all carry the tenth's stamp, even when
read 60 bytes at a time), so such an event arrived somewhere between the previous read and that stamp.
``ttft_uncertainty_ns`` is that bound for the first token (0 when no later token event shared its read; the
events that end a stream are sent with the last token and do not count).
"""

from __future__ import annotations

import asyncio
import sys

import orjson
from yarl import URL

from ..records import RequestRecord
from .openai import Prompt, error_message, request_body
from .rawhttp import RawConnection, RawHTTPError, RawPool, request_head
from .sse import SSEParser
from .transport import (
    KEEPALIVE_S,
    Client,
    ClientConfig,
    _decode_small,
    _Decoder,
    _http_error_type,
    _scrub_record,
    now_ns,
    record_failure,
    settle_tokens,
)

ERROR_BODY_LIMIT = 4096


def raw_supported(base_url: str) -> bool:
    """Plain HTTP on Linux: the raw path with kernel receive timestamps applies."""
    try:
        return sys.platform.startswith("linux") and URL(base_url).scheme == "http"
    except (ValueError, TypeError):
        return False


class RawClient(Client):
    transport = "raw"

    def __init__(self, cfg: ClientConfig, t0_ns: int = 0) -> None:
        super().__init__(cfg, t0_ns)
        u = URL(self.url)
        self._host, self._port = u.host or "127.0.0.1", u.port or 80
        self._path = u.raw_path_qs or "/"
        self._pool: RawPool | None = None
        self._base_headers = {"User-Agent": "phasebench", **self._headers}  # a --header User-Agent wins

    async def __aenter__(self) -> "RawClient":
        self._pool = RawPool(self.cfg.max_connections, KEEPALIVE_S)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.close()

    async def _send_once(self, rec: RequestRecord, prompt: Prompt) -> bool:
        assert self._pool is not None, "use 'async with RawClient(...)'"
        cfg, t0 = self.cfg, self.t0
        chunk_chars: list[int] = []
        conn: RawConnection | None = None
        reusable = False
        stale = False
        try:
            body = request_body(cfg.endpoint, cfg.model, prompt, exact_output=cfg.exact_output, temperature=cfg.temperature,
                                engine=cfg.engine)
            if cfg.extra_body:
                body.update(cfg.extra_body)
            payload = orjson.dumps(body)
            head = request_head("POST", self._host, self._port, self._path,
                                {**self._base_headers, "X-Request-Id": rec.request_id}, len(payload))
            async with asyncio.timeout(cfg.timeout):
                conn = await self._pool.acquire(self._host, self._port, 30.0)
                reused = conn.requests > 0
                rec.sent_ns = now_ns() - t0
                try:
                    await conn.send(head, payload)
                    reusable = await self._read(conn, rec, chunk_chars)
                except RawHTTPError as e:
                    stale = reused and e.before_any_byte and rec.first_byte_ns is None
                    raise
        except RawHTTPError as e:
            rec.end_ns = now_ns() - t0
            rec.error_type = "dropped" if rec.headers_ns is not None else "connection"
            rec.error = f"connection dropped: {e}"[:300] if rec.headers_ns is not None else str(e)[:300]
        except asyncio.CancelledError:
            rec.end_ns = now_ns() - t0
            rec.error_type, rec.error = "cancelled", "run interrupted"
            raise
        except Exception as e:  # noqa: BLE001 - a bug or an odd answer must cost one request, never the run
            record_failure(rec, e, cfg, t0, self._secret)
        finally:
            if conn is not None:
                if reusable:
                    self._pool.release(conn, self._host, self._port)
                else:
                    self._pool.discard(conn)
            settle_tokens(rec, chunk_chars)
            _scrub_record(rec, self._secret)
        return stale

    async def _read(self, conn: RawConnection, rec: RequestRecord, chunk_chars: list[int]) -> bool:
        """Read the response; True when it ended cleanly and the connection can be reused."""
        cfg, t0 = self.cfg, self.t0
        parser = SSEParser(cfg.max_event_bytes)
        decoder: _Decoder | None = None
        error_body: list[bytes] | None = None
        delays: list[int] = []
        prev_read = rec.sent_ns + t0 if rec.sent_ns is not None else now_ns()
        done = False
        while True:
            read, resp = await conn.next_read(cfg.stall_timeout)
            if read is None:
                break
            t = read.arrival_ns - t0
            if rec.first_byte_ns is None:
                rec.first_byte_ns = t
            if resp.headers_done and rec.headers_ns is None:
                rec.headers_ns = t
                rec.status = resp.status
                coding = resp.headers.get("content-encoding", "").strip().lower()
                if resp.status != 200:
                    error_body = []
                elif coding not in ("", "identity"):
                    if coding not in _Decoder.CODINGS:
                        rec.end_ns = t
                        rec.error_type = "encoding"
                        rec.error = (f"the server sent Content-Encoding {coding[:40]!r}, which phasebench does not "
                                     "decode (it asks for identity; gzip and deflate are decoded)")
                        return False
                    decoder = _Decoder(coding)
            if error_body is not None:
                error_body.extend(read.body)
                if sum(map(len, error_body)) >= ERROR_BODY_LIMIT or resp.complete:
                    coding = resp.headers.get("content-encoding", "").strip().lower()
                    text = _decode_small(b"".join(error_body)[:ERROR_BODY_LIMIT], coding)
                    for secret in self._secret:
                        text = text.replace(secret.encode(), b"***")
                    rec.end_ns = t
                    rec.error_type = _http_error_type(rec.status or 0)
                    rec.error = f"HTTP {rec.status}: {error_message(text)}"
                    return resp.complete
                continue
            if done:  # after [DONE]: read to the end of the HTTP message, so the connection can be reused
                prev_read = read.read_ns
                continue
            events: list[tuple[bytes, bytes]] = []
            for piece in read.body:
                if decoder is None:
                    events.extend(parser.feed(piece))
                else:
                    for p in decoder.decode(piece):
                        events.extend(parser.feed(p))
            over = False
            firsts: list[bool] = []  # per token-bearing event of this read: was it the request's first token?
            for ev in events:
                before = len(rec.chunk_ns)
                over = self._events([ev], t, rec, chunk_chars)
                if len(rec.chunk_ns) > before:
                    firsts.append(before == 0)
                if over:
                    break
            got_tokens = bool(firsts)
            for j, first in enumerate(firsts):
                # a later token event in the same read: the kernel stamped the read with a later segment, so
                # this one arrived somewhere between the previous read and t. The events that end a stream
                # ([DONE], a finish or usage event) come with the last token and do not count.
                later = j < len(firsts) - 1
                rec.coalesced_reads += later
                if first:
                    rec.ttft_uncertainty_ns = max(read.arrival_ns - prev_read, 0) if later else 0
            if got_tokens:
                delays.append(read.read_ns - read.arrival_ns)
            prev_read = read.read_ns
            if over:
                if rec.error is not None:
                    return False
                rec.end_ns = t
                done = True
        rec.read_delay_ns = delays or None
        if done:
            return conn.reusable()
        events = parser.feed(decoder.flush()) if decoder is not None else []
        events.extend(parser.flush())
        t_end = now_ns() - t0
        if events and self._events(events, t_end, rec, chunk_chars):
            if rec.error is None:
                rec.end_ns = t_end
            return False
        rec.end_ns = t_end
        if rec.finish_reason is None:
            rec.error_type = "dropped"
            rec.error = "stream ended before [DONE] or a finish_reason"
            return False
        return conn.reusable()


def make_client(cfg: ClientConfig, t0_ns: int = 0) -> Client:
    """The client for ``cfg.transport``: ``raw`` (kernel receive stamps) or ``aiohttp``."""
    return RawClient(cfg, t0_ns) if cfg.transport == "raw" else Client(cfg, t0_ns)


def choose_transport(requested: str, base_url: str) -> str:
    """``auto``: raw for plain HTTP on Linux, else aiohttp; ``raw`` where it cannot run is an error."""
    if requested == "aiohttp":
        return "aiohttp"
    if requested == "raw" and not raw_supported(base_url):
        raise ValueError("--transport raw needs a plain http:// URL on Linux (use auto or aiohttp)")
    return "raw" if raw_supported(base_url) else "aiohttp"
