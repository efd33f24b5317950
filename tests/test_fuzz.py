"""Property tests of the stream reader and the event decoder (hypothesis).

(a) ``SSEParser`` against a small reference parser that follows the WHATWG EventSource rules line by line
    (written here from the spec, independent of the parser), for random streams split at random byte
    positions and, for small streams, at every byte: comments, field names, ``data:`` with and without a
    space, multi-line data, CR / LF / CRLF, a leading BOM.
(b) ``parse_event`` on arbitrary JSON and on OpenAI-like shapes: it raises nothing but ``ValueError`` and
    what it returns is well typed; on well-formed events it returns what they say.

``benchmarks/fuzz.py`` runs the same checks on >= 100,000 cases.
"""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasebench.client.openai import MAX_COUNT, TIMING_KEYS, Delta, parse_event
from phasebench.client.sse import SSEParser

FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\r|\n")


def reference_events(stream: bytes) -> list[tuple[bytes, bytes]]:
    """The WHATWG "interpreting an event stream" steps, literally (data buffer with a LF per line, the last
    LF removed at dispatch), plus phasebench's one leniency: the end of the stream ends the last line and
    dispatches the last event."""
    if stream.startswith(BOM):
        stream = stream[3:]
    *lines, tail = _LINE_END.split(stream)
    if tail:
        lines.append(tail)
    lines.append(b"")
    events: list[tuple[bytes, bytes]] = []
    data_buf, type_buf = b"", b""
    for line in lines:
        if line == b"":  # dispatch
            if data_buf:
                if data_buf.endswith(b"\n"):
                    data_buf = data_buf[:-1]
                events.append((type_buf, data_buf))
            data_buf, type_buf = b"", b""
            continue
        if line.startswith(b":"):
            continue
        if b":" in line:
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
        else:
            name, value = line, b""
        if name == b"data":
            data_buf += value + b"\n"
        elif name == b"event":
            type_buf = value
        # id, retry and any other field change no event's type or data
    return events


def parse_in_parts(stream: bytes, cuts: list[int], max_event_bytes: int = 1 << 30) -> list[tuple[bytes, bytes]]:
    p = SSEParser(max_event_bytes)
    out = []
    prev = 0
    for c in sorted(set(cuts)) + [len(stream)]:
        out.extend(p.feed(stream[prev:c]))
        prev = c
    out.extend(p.flush())
    return out


# ---- (a) SSE streams ----
_no_newline = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_value = st.one_of(_no_newline, st.text(max_size=8).map(lambda s: s.encode().replace(b"\r", b"").replace(b"\n", b"")),
                   st.sampled_from([b"", b" ", b"  x", b"[DONE]", b'{"a":1}', b":", b"data: x"]))
_field = st.sampled_from([b"data", b"event", b"id", b"retry", b"dat", b"Data", b"data ", b"x", b"", BOM + b"data"])
_line = st.one_of(
    st.tuples(st.sampled_from([b"data: ", b"data:", b"data", b"data:  "]), _value).map(b"".join),
    st.tuples(st.just(b":"), _value).map(b"".join),  # comment
    st.tuples(_field, st.sampled_from([b":", b": ", b""]), _value).map(b"".join),
    st.just(b""),
    _no_newline,
)
_end = st.sampled_from([b"\n", b"\r", b"\r\n"])
_tokens = st.sampled_from([b"data", b"event", b":", b" ", b"\r", b"\n", b"\r\n", b"x", b"y", BOM, b"\xef", b"\xbb"])


@st.composite
def sse_streams(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 4)) == 0:  # token soup: odd combinations of the grammar's pieces
        return b"".join(draw(st.lists(_tokens, max_size=40)))
    body = b"".join(line + draw(_end) for line in draw(st.lists(_line, max_size=12)))
    head = draw(st.sampled_from([b"", b"", BOM, b"\xef\xbb", BOM + BOM]))
    tail = draw(st.one_of(st.just(b""), _line))
    return head + body + tail


@pytest.mark.slow
@settings(FAST, max_examples=550)
@given(st.data())
def test_sse_matches_reference_at_random_splits(data):
    stream = data.draw(sse_streams())
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    assert parse_in_parts(stream, cuts) == reference_events(stream)


@settings(FAST, max_examples=120)
@given(sse_streams())
def test_sse_matches_reference_split_at_every_byte(stream):
    stream = stream[:80]
    want = reference_events(stream)
    assert parse_in_parts(stream, list(range(len(stream)))) == want  # one byte per read
    for cut in range(len(stream) + 1):  # and two reads, cut anywhere
        assert parse_in_parts(stream, [cut]) == want, cut


def test_whatwg_examples():
    # the examples of the spec's "event stream interpretation" section
    assert reference_events(b"data: YHOO\ndata: +2\ndata: 10\n\n") == [(b"", b"YHOO\n+2\n10")]
    s = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
    want = [(b"", b"first event"), (b"", b"second event"), (b"", b" third event")]
    assert reference_events(s) == want and parse_in_parts(s, []) == want
    s = b"data\n\ndata\ndata\n\ndata:"
    want = [(b"", b""), (b"", b"\n"), (b"", b"")]  # the last one only by phasebench's end-of-stream leniency
    assert reference_events(s) == want and parse_in_parts(s, [3, 9]) == want
    s = b"data:test\n\ndata: test\n\n"
    assert parse_in_parts(s, []) == [(b"", b"test"), (b"", b"test")]


# ---- (b) the event decoder ----
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=8,
)
_count = st.one_of(st.integers(-5, 2 * MAX_COUNT), st.integers(0, 1000), st.booleans(), _json)
_num = st.one_of(st.floats(-1, 1e6, allow_nan=False), st.integers(-1, 10**6), _json)
_str = st.one_of(st.text(max_size=6), st.none(), _json)


_delta = st.one_of(_json, st.fixed_dictionaries({}, optional={"content": _str, "reasoning_content": _str,
                                                              "reasoning": _str, "role": _str}))
_choice = st.one_of(_json, st.fixed_dictionaries({}, optional={"text": _str, "delta": _delta, "finish_reason": _str,
                                                               "index": _count}))
_usage = st.one_of(_json, st.fixed_dictionaries({}, optional={
    "prompt_tokens": _count, "completion_tokens": _count, "total_tokens": _count,
    "prompt_tokens_details": st.one_of(_json, st.fixed_dictionaries({}, optional={"cached_tokens": _count}))}))
_openai_like = st.fixed_dictionaries({}, optional={
    "choices": st.one_of(_json, st.lists(_choice, max_size=2)),
    "usage": _usage,
    "pb_ns": st.one_of(st.integers(0, 2**62), _json),
    "error": st.one_of(_json, st.fixed_dictionaries({}, optional={"message": _str})),
    "timings": st.one_of(_json, st.fixed_dictionaries({}, optional={
        "prompt_n": _count, "prompt_ms": _num, "predicted_n": _count, "predicted_ms": _num, "cache_n": _count})),
    "metrics": st.one_of(_json, st.fixed_dictionaries({}, optional={
        "time_to_first_token_ms": _num, "queue_time_ms": _num, "generation_time_ms": _num, "mean_itl_ms": _num,
        "tokens_per_second": _num})),
    "eval_duration": _num, "eval_count": _count, "prompt_eval_duration": _num, "prompt_eval_count": _count,
    "details": st.one_of(_json, st.fixed_dictionaries({}, optional={"generated_tokens": _count})),
})


def _is_count(v: object) -> bool:
    return v is None or (type(v) is int and 0 <= v <= MAX_COUNT)


def well_typed(d: Delta) -> bool:
    return (
        type(d.text) is str and type(d.reasoning) is str
        and (d.finish_reason is None or type(d.finish_reason) is str)
        and _is_count(d.prompt_tokens) and _is_count(d.completion_tokens) and _is_count(d.cached_tokens)
        and (d.error is None or type(d.error) is str)
        and (d.stamp is None or type(d.stamp) is int)
        and (d.timing is None or (type(d.timing) is dict and all(
            k in TIMING_KEYS and type(v) in (int, float) and v >= 0 for k, v in d.timing.items())))
    )


def decode(payload: bytes) -> Delta | None:
    """``parse_event``, with ValueError (the one allowed failure) as None; anything else fails the test."""
    try:
        d = parse_event(payload)
    except ValueError:
        return None
    assert well_typed(d), d
    return d


@settings(FAST, max_examples=600)
@given(_json)
def test_parse_event_on_any_json(value):
    decode(orjson.dumps(value))


@pytest.mark.slow
@settings(FAST, max_examples=700)
@given(_openai_like)
def test_parse_event_on_openai_like_shapes(obj):
    decode(orjson.dumps(obj))


@settings(FAST, max_examples=300)
@given(st.one_of(st.binary(max_size=40), _json.map(lambda v: orjson.dumps(v)[:-1])))
def test_parse_event_on_any_bytes(payload):
    decode(payload)


@settings(FAST, max_examples=300)
@given(text=st.text(max_size=10), finish=st.sampled_from([None, "stop", "length"]), chat=st.booleans(),
       n_in=st.integers(0, MAX_COUNT), n_out=st.integers(0, MAX_COUNT), cached=st.none() | st.integers(0, 100),
       stamp=st.none() | st.integers(0, 2**62))
def test_parse_event_reads_well_formed_events(text, finish, chat, n_in, n_out, cached, stamp):
    choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
    obj: dict = {"choices": [{**choice, "finish_reason": finish}],
                 "usage": {"prompt_tokens": n_in, "completion_tokens": n_out}}
    if cached is not None:
        obj["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
    if stamp is not None:
        obj["pb_ns"] = stamp
    d = parse_event(orjson.dumps(obj))
    assert (d.text, d.finish_reason, d.prompt_tokens, d.completion_tokens, d.cached_tokens, d.stamp) == (
        text, finish, n_in, n_out, cached, stamp)
