"""Plain HTTP/1.1 on raw non-blocking sockets, with the kernel's receive timestamp on every read.

Why: a chunk's arrival time should not depend on when the event loop gets round to reading it. On Linux the
socket option ``SO_TIMESTAMPNS`` makes the kernel stamp each received segment; ``recvmsg`` returns the stamp
(``SCM_TIMESTAMPNS``: seconds and nanoseconds on ``CLOCK_REALTIME``) beside the bytes. It is converted to the
run's clock (``perf_counter_ns`` = ``CLOCK_MONOTONIC``) with an offset measured between the two clocks and
refreshed every second. The delay between the kernel's stamp and the read is the client's own read delay.

How TCP reports it: one read that spans several segments carries the stamp of the *last* of them, so the
earlier events in such a read arrived no later than that stamp (and are stamped with it; the reads that
carried more than one event are counted per request as ``coalesced_reads``).

Responses are parsed by ``httptools`` (llhttp, Node.js's HTTP parser): status, headers, chunked and
Content-Length bodies, keep-alive. Connections are pooled per (host, port) and dropped after ``KEEPALIVE_S``
idle, as aiohttp's pool does here. TLS, proxies and anything else stay on aiohttp (``transport.Client``).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field

import httptools

now_ns = time.perf_counter_ns

SO_TIMESTAMPNS = 35  # Linux; Python's socket module lacks the constant name
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
ANC_BUF = 64
READ_SIZE = 65536
OFFSET_REFRESH_NS = 1_000_000_000


class ClockOffset:
    """CLOCK_REALTIME − CLOCK_MONOTONIC, from the tightest of a few bracketed readings, refreshed each second."""

    def __init__(self) -> None:
        self.offset = 0
        self.at = 0
        self.refresh()

    def refresh(self) -> None:
        best = None
        for _ in range(5):
            a = now_ns()
            r = time.time_ns()
            b = now_ns()
            if best is None or b - a < best[0]:
                best = (b - a, r - (a + b) // 2)
        assert best is not None
        self.offset = best[1]
        self.at = now_ns()

    def to_monotonic(self, realtime_ns: int) -> int:
        if now_ns() - self.at > OFFSET_REFRESH_NS:
            self.refresh()
        return realtime_ns - self.offset


class RawHTTPError(Exception):
    """A connection-level failure (refused, reset, closed early, bad HTTP)."""

    def __init__(self, message: str, before_any_byte: bool) -> None:
        super().__init__(message)
        self.before_any_byte = before_any_byte


@dataclass
class Read:
    """What one ``recvmsg`` gave: body bytes (de-chunked), the kernel's arrival stamp, the time it was read."""

    body: list[bytes]
    arrival_ns: int  # kernel stamp on the run's clock (or the read time where the kernel gave none)
    read_ns: int
    kernel: bool


@dataclass
class _Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    headers_done: bool = False
    complete: bool = False
    body: list[bytes] = field(default_factory=list)


class RawConnection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, sock: socket.socket, clock: ClockOffset) -> None:
        self.sock = sock
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.idle_since = 0.0
        self.requests = 0
        self.kernel = True
        self._reads: deque[tuple[bytes, int, int, bool]] = deque()
        self._waiter: asyncio.Future | None = None
        self._eof = False
        self._error: OSError | None = None
        self._reading = False
        self._resp = _Response()
        self._keep_alive = False
        self._parser = httptools.HttpResponseParser(self)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            self.kernel = False

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._resp.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._resp.status = self._parser.get_status_code()
        self._resp.headers_done = True

    def on_body(self, body: bytes) -> None:
        self._resp.body.append(body)

    def on_message_complete(self) -> None:
        self._resp.complete = True
        self._keep_alive = self._parser.should_keep_alive()  # only meaningful inside the callback (llhttp)

    # reading
    def _on_readable(self) -> None:
        """Called by the event loop as soon as the socket is readable: read and stamp at once."""
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(READ_SIZE, ANC_BUF)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._error = e
            self._stop_reading()
            self._wake()
            return
        t_read = now_ns()
        arrival, kernel = t_read, False
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(payload) >= 16:
                sec, nsec = struct.unpack("qq", payload[:16])
                arrival = min(self.clock.to_monotonic(sec * 1_000_000_000 + nsec), t_read)
                kernel = True
        if not data:
            self._eof = True
            self._stop_reading()
        self._reads.append((data, arrival, t_read, kernel))
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _start_reading(self) -> None:
        if not self._reading:
            self.loop.add_reader(self.sock.fileno(), self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            try:
                self.loop.remove_reader(self.sock.fileno())
            except (ValueError, OSError):
                pass
            self._reading = False

    async def send(self, head: bytes, body: bytes) -> None:
        self._resp = _Response()
        self._keep_alive = False
        self._parser = httptools.HttpResponseParser(self)
        self._reads.clear()
        self._eof = False
        self._error = None
        self.requests += 1
        self._start_reading()
        try:
            await self.loop.sock_sendall(self.sock, head + body)
        except OSError as e:
            raise RawHTTPError(f"{type(e).__name__}: {e}", before_any_byte=True) from None

    async def next_read(self, stall_s: float) -> tuple[Read | None, _Response]:
        """The next read's de-chunked body pieces (``None`` at the end of the response)."""
        resp = self._resp
        while not self._reads:
            if resp.complete:
                return None, resp
            if self._eof or self._error is not None:
                raise RawHTTPError(
                    f"connection closed by the server{f': {self._error}' if self._error else ''}",
                    before_any_byte=not resp.headers_done and not resp.body)
            self._waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, stall_s)
            finally:
                self._waiter = None
        data, arrival, t_read, kernel = self._reads.popleft()
        if not data and not resp.complete:  # the server closed before the response was whole
            if resp.headers_done and "content-length" not in resp.headers and "chunked" not in resp.headers.get(
                    "transfer-encoding", "").lower():
                resp.complete = True  # a body delimited by the end of the connection (HTTP/1.0 style)
                return None, resp
            raise RawHTTPError("connection closed by the server", before_any_byte=not resp.headers_done and not resp.body)
        if data:
            resp.body = []
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                raise RawHTTPError("the server switched protocols", before_any_byte=False) from None
            except httptools.HttpParserError as e:
                raise RawHTTPError(f"bad HTTP from the server: {e}", before_any_byte=False) from None
        return Read(list(resp.body), arrival, t_read, kernel), resp

    def closed_by_peer(self) -> bool:
        """An idle pooled connection the server has closed (EOF waiting) or written to unasked: not reusable."""
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) is not None
        except (BlockingIOError, InterruptedError):
            return False  # nothing to read: still open
        except OSError:
            return True

    def reusable(self) -> bool:
        return self._resp.complete and self._keep_alive and not self._eof and self._error is None and not self._reads

    def close(self) -> None:
        self._stop_reading()
        try:
            self.sock.close()
        except OSError:
            pass


class RawPool:
    """Keep-alive connections per (host, port), at most ``limit`` open at once."""

    def __init__(self, limit: int, keepalive_s: float) -> None:
        self.limit = asyncio.Semaphore(limit)
        self.keepalive_s = keepalive_s
        self._idle: dict[tuple[str, int], list[RawConnection]] = {}
        self.clock = ClockOffset()
        self.opened = 0

    async def acquire(self, host: str, port: int, connect_timeout: float) -> RawConnection:
        await self.limit.acquire()
        try:
            idle = self._idle.get((host, port), [])
            now = time.monotonic()
            while idle:
                c = idle.pop()
                if now - c.idle_since < self.keepalive_s and not c.closed_by_peer():
                    return c
                c.close()
            return await self._open(host, port, connect_timeout)
        except BaseException:
            self.limit.release()
            raise

    async def _open(self, host: str, port: int, timeout: float) -> RawConnection:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise RawHTTPError(f"cannot resolve {host}: {e}", before_any_byte=True) from None
        last: Exception | None = None
        for family, kind, proto, _name, addr in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
                self.opened += 1
                return RawConnection(sock, self.clock)
            except (OSError, asyncio.TimeoutError) as e:
                sock.close()
                last = e
        raise RawHTTPError(f"Cannot connect to host {host}:{port} ({type(last).__name__}: {last})",
                           before_any_byte=True)

    def release(self, conn: RawConnection, host: str, port: int) -> None:
        if conn.reusable():
            conn._stop_reading()
            conn.idle_since = time.monotonic()
            self._idle.setdefault((host, port), []).append(conn)
        else:
            conn.close()
        self.limit.release()

    def discard(self, conn: RawConnection) -> None:
        conn.close()
        self.limit.release()

    def close(self) -> None:
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()


def request_head(method: str, host: str, port: int, path: str, headers: dict[str, str], length: int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {length}", "Accept-Encoding: identity"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length", "accept-encoding")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
