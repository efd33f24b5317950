"""Server-sent events, parsed from bytes, in linear time, by the WHATWG EventSource line rules.

The parser only finds event boundaries and ``data:`` payloads; it never decodes JSON. The caller stamps the
arrival time of each read *before* feeding it here, so every event carries the time its bytes arrived, and an
event is handed out by the very read that completes it (never one read late).

Rules (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
- one leading UTF-8 BOM (``EF BB BF``) at the start of the stream is dropped, even split across reads;
- a line ends at CRLF, LF or CR; a CR that ends a read ends its line at once, and a LF that then starts the
  next read is the second half of that CRLF and is dropped;
- a blank line dispatches the event (if it has any ``data`` line); ``:`` starts a comment; ``field:value``
  with one optional space after the colon; a line with no colon is a field with an empty value;
- ``data`` lines are joined with LF; ``event`` sets the type (``b""`` = the default "message"); ``id``,
  ``retry`` and unknown fields are ignored.
- Deliberately lenient where WHATWG is not: at the end of the stream an unfinished event is still handed
  out by ``flush`` (some servers end with ``data: [DONE]`` and no blank line).

Each byte is looked at a bounded number of times: a read is scanned once, an unfinished line is kept as
pieces and joined once when it ends. ``max_event_bytes`` caps what one event may hold (its data plus an
unfinished line); past it ``feed`` raises ``EventTooLarge`` and the parser stops growing.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "Event", "EventTooLarge", "SSEParser"]

Event = tuple[bytes, bytes]  # (event type, data); type is b"" for the default "message"

BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_EVENT_BYTES = 4 * 2**20


class EventTooLarge(ValueError):
    """One event grew past the parser's ``max_event_bytes``."""


class SSEParser:
    __slots__ = ("_data", "_data_len", "_etype", "_failed", "_line", "_line_len", "_max", "_skip_lf", "_start")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._line: list[bytes] = []  # pieces of the unfinished last line
        self._line_len = 0
        self._data: list[bytes] = []  # the current event's data lines
        self._data_len = 0
        self._etype = b""
        self._skip_lf = False  # the last read ended with CR: a LF starting the next read belongs to it
        self._start: bytes | None = b""  # bytes seen while a BOM is still possible; None once decided
        self._max = max_event_bytes
        self._failed = False

    def feed(self, chunk: bytes) -> list[Event]:
        if self._failed:
            raise EventTooLarge(f"an event is larger than {self._max} bytes")
        if self._start is not None:
            chunk = self._start + chunk
            if len(chunk) < 3 and BOM.startswith(chunk):
                self._start = chunk  # could still become a BOM
                return []
            self._start = None
            if chunk.startswith(BOM):
                chunk = chunk[3:]
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n")
        if end < 0:
            if chunk:
                self._hold(chunk)
            return []
        if self._line:
            self._line.append(chunk[:end])
            lines = b"".join(self._line).split(b"\n")
            self._line, self._line_len = [], 0
        else:
            lines = chunk[:end].split(b"\n")
        out: list[Event] = []
        for line in lines:
            if not line:
                if self._data:
                    data = self._data
                    out.append((self._etype, data[0] if len(data) == 1 else b"\n".join(data)))
                    self._data, self._data_len = [], 0
                self._etype = b""
            elif line[:5] == b"data:":
                value = line[6:] if line[5:6] == b" " else line[5:]
                self._data.append(value)
                self._data_len += len(value) + 1
                if self._data_len > self._max:
                    self._fail()
            elif line[:1] != b":":
                self._field(line)
        rest = chunk[end + 1 :]
        if rest:
            self._hold(rest)
        return out

    def flush(self) -> list[Event]:
        """At the end of the stream: the unfinished line is taken as ended, and an unfinished event handed out."""
        if self._failed:
            return []
        out = self.feed(b"\n") if (self._line or self._start) else []
        if self._data:
            out.append((self._etype, b"\n".join(self._data)))
        self._data, self._data_len, self._etype, self._start = [], 0, b"", None
        return out

    @property
    def pending(self) -> int:
        """Bytes held for an event not yet complete."""
        return self._line_len + self._data_len

    def _hold(self, piece: bytes) -> None:
        self._line.append(piece)
        self._line_len += len(piece)
        if self._line_len + self._data_len > self._max:
            self._fail()

    def _fail(self) -> None:
        self._failed = True
        self._line, self._line_len, self._data, self._data_len = [], 0, [], 0
        raise EventTooLarge(f"an event is larger than {self._max} bytes (max_event_bytes)")

    def _field(self, line: bytes) -> None:
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_len += len(value) + 1
            if self._data_len > self._max:
                self._fail()
        elif name == b"event":
            self._etype = value
