from phasebench.client.sse import SSEParser


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
