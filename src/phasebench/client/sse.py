"""Server-sent events, parsed from bytes.

The parser only finds event boundaries and ``data:`` payloads; it never decodes JSON. The caller stamps the
arrival time of each read *before* feeding it here, so every event carries the time its bytes arrived.
Handles: events split across reads, several events in one read, CRLF line ends, ``:`` comments
(keep-alives), ``data:`` with or without a space, multi-line data, and ``event:`` types.
"""

from __future__ import annotations

__all__ = ["SSEParser", "Event"]

Event = tuple[bytes, bytes]  # (event type, data); type is b"" for the default "message"


class SSEParser:
    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF split across reads: keep it for later.
            tail = b"\r" if buf.endswith(b"\r") else b""
            if tail:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        if b"\n\n" not in buf:
            self._buf = buf
            return []
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        out: list[Event] = []
        for block in blocks:
            ev = _parse_block(block)
            if ev is not None:
                out.append(ev)
        return out

    def flush(self) -> list[Event]:
        """The last event when a stream ends without a blank line after it."""
        rest, self._buf = self._buf.rstrip(b"\r\n"), b""
        ev = _parse_block(rest) if rest else None
        return [ev] if ev is not None else []

    @property
    def pending(self) -> int:
        return len(self._buf)


def _parse_block(block: bytes) -> Event | None:
    # Fast path: a single "data: ..." line, which is nearly every event an LLM server sends.
    if block.startswith(b"data:") and b"\n" not in block:
        data = block[5:]
        return (b"", data[1:] if data[:1] == b" " else data)
    etype = b""
    datas: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[:1] == b":":
            continue  # blank or comment / keep-alive
        field, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            datas.append(value)
        elif field == b"event":
            etype = value
    if not datas:
        return None
    return (etype, b"\n".join(datas))
