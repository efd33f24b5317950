import time

import pytest

from phasebench.client.sse import EventTooLarge, SSEParser


def feed_all(parts: list[bytes]) -> list[tuple[bytes, bytes]]:
    p = SSEParser()
    out = []
    for part in parts:
        out.extend(p.feed(part))
    out.extend(p.flush())
    return out


def test_one_event_per_read():
    assert feed_all([b'data: {"a":1}\n\n']) == [(b"", b'{"a":1}')]


def test_event_split_across_reads_at_every_byte():
    raw = b'data: {"x": 1}\n\ndata: [DONE]\n\n'
    for cut in range(1, len(raw)):
        assert feed_all([raw[:cut], raw[cut:]]) == [(b"", b'{"x": 1}'), (b"", b"[DONE]")], cut


def test_several_events_in_one_read_and_no_space_after_colon():
    assert feed_all([b"data:a\n\ndata: b\n\ndata:c\n\n"]) == [(b"", b"a"), (b"", b"b"), (b"", b"c")]


def test_comments_keepalives_and_blank_events_are_skipped():
    assert feed_all([b": ping\n\n: another\n\ndata: x\n\n\n\n"]) == [(b"", b"x")]


def test_crlf_line_ends_even_split_between_cr_and_lf():
    raw = b"data: a\r\n\r\ndata: b\r\n\r\n"
    for cut in range(1, len(raw)):
        assert feed_all([raw[:cut], raw[cut:]]) == [(b"", b"a"), (b"", b"b")], cut


def test_event_type_and_multiline_data():
    assert feed_all([b"event: error\ndata: line1\ndata: line2\nid: 7\n\n"]) == [(b"error", b"line1\nline2")]


def test_last_event_without_blank_line_is_flushed():
    assert feed_all([b"data: tail"]) == [(b"", b"tail")]


def test_leading_bom_is_dropped_even_split_across_reads():
    raw = b'\xef\xbb\xbfdata: {"x": 1}\n\n'
    for cut in range(5):
        assert feed_all([raw[:cut], raw[cut:]]) == [(b"", b'{"x": 1}')], cut
    assert feed_all([b"\xef", b"\xbb", b"\xbf", b"data: a\n\n"]) == [(b"", b"a")]
    # only at the very start: a BOM later is part of a field name (an unknown field, ignored)
    assert feed_all([b"data: a\n\n\xef\xbb\xbfdata: b\n\ndata: c\n\n"]) == [(b"", b"a"), (b"", b"c")]
    # a partial BOM that never completes is ordinary bytes
    assert feed_all([b"\xef\xbb"]) == []


def test_cr_at_the_end_of_a_read_ends_the_event_at_that_read():
    p = SSEParser()
    assert p.feed(b"data: a\r\r") == [(b"", b"a")]  # not held back to the next read
    assert p.feed(b"\ndata: b\r\n") == []  # the LF completes the CR of the last read: no extra blank line
    assert p.feed(b"\r") == [(b"", b"b")]
    assert p.feed(b"\n") == []
    assert p.feed(b"data: c\n\n") == [(b"", b"c")]
    # CR CR is two line ends (an event), a LF after a CR that did not end a read is part of CRLF
    assert feed_all([b"data: x\r", b"\r", b"data: y\r\n\r\n"]) == [(b"", b"x"), (b"", b"y")]


def test_max_event_bytes_fails_and_stops_growing():
    p = SSEParser(max_event_bytes=10_000)
    p.feed(b"data: ")
    with pytest.raises(EventTooLarge, match="10000 bytes"):
        for _ in range(100):
            p.feed(b"x" * 1000)
            assert p.pending <= 10_000
    assert p.pending == 0
    with pytest.raises(EventTooLarge):
        p.feed(b"\n\n")  # a failed parser stays failed
    # many data lines count together
    p = SSEParser(max_event_bytes=100)
    with pytest.raises(EventTooLarge):
        p.feed(b"data: 0123456789\n" * 20)
    # events under the limit, one after another, never add up
    p = SSEParser(max_event_bytes=100)
    for _ in range(1000):
        assert p.feed(b"data: " + b"y" * 80 + b"\n\n") == [(b"", b"y" * 80)]


def test_a_10_mb_event_in_4_kb_reads_is_linear():
    # The old parser re-scanned the whole pending buffer on each read: ~15 s here. Linear: milliseconds.
    # The bound is 100x the linear time on a busy machine, so it only catches a return to quadratic.
    payload = b'{"choices":[{"text":"' + b"z" * (10 * 2**20) + b'"}]}'
    raw = b"data: " + payload + b"\n\n"
    p = SSEParser(max_event_bytes=16 * 2**20)
    t = time.perf_counter()
    out = []
    for i in range(0, len(raw), 4096):
        out.extend(p.feed(raw[i : i + 4096]))
    assert time.perf_counter() - t < 3.0
    assert out == [(b"", payload)]
