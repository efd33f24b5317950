"""A simulation's requests as arrays: the fast path from the replica simulator to records and summary.

A simulated token is stamped at the end of the iteration that made it, so a request that was never
preempted has, as its tokens, its first token and then every decode iteration from the one after its prefill
to the one it finished in. Its inter-token gaps are therefore a contiguous slice of the gaps between
consecutive decode iterations. :class:`Columns` keeps that slice (``lo``, ``hi`` into the decode iterations)
instead of expanding every token, and keeps the explicit token times only for the few requests that were
preempted or otherwise irregular.

From it come

- :func:`summarize_columns`: the same ``summary.json`` that :func:`phasebench.metrics.summarize` computes from
  records (tested equal on the same run), in numpy over the iterations weighted by how many requests ran in
  each, never per token in Python;
- :func:`write_jsonl`: ``requests.jsonl`` lines with exactly the fields and types of
  :class:`~phasebench.records.RequestRecord` (``read_records`` reads them back), written from byte templates
  with each decode iteration's time formatted once (a request's token times are a slice of that text), not
  through ``dataclasses.asdict``;
- :func:`to_records`: ``RequestRecord`` objects, for callers that want them.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..metrics import (
    BUFFERED_NS_PER_TOKEN,
    PERCENTILES,
    RunContext,
    check_validity,
    quantile_ci_ranks,
    too_few_for,
    workload_block,
)
from ..records import RequestRecord
from .replica import SimResult, token_times

if TYPE_CHECKING:
    from ..store import RequestRow

NS_PER_MS = 1e6
_OPT = orjson.OPT_SERIALIZE_NUMPY


def _ns(x: np.ndarray | float) -> np.ndarray:
    return np.rint(np.asarray(x, dtype=np.float64) * 1e9).astype(np.int64)


@dataclass
class Columns:
    """Per-request arrays of one or more simulations (times in integer ns, as records hold them)."""

    index: np.ndarray              # record index
    sched: np.ndarray              # scheduled = sent
    n_in: np.ndarray
    n_out: np.ndarray              # expected output tokens
    first: np.ndarray              # first token; -1 when not served
    end: np.ndarray                # -1 when not served
    served: np.ndarray             # bool
    n_tok: np.ndarray              # output tokens made
    last: np.ndarray               # last token
    # regular requests: tokens = [first, dec_ns[lo:hi]]; irregular ones: explicit times in ``explicit``
    lo: np.ndarray
    hi: np.ndarray
    dec_ns: np.ndarray             # end times of the decode iterations (ns), of the simulation the row came from
    group: np.ndarray              # which simulation (index into ``dec_groups``) the row came from
    dec_groups: list[np.ndarray] = field(default_factory=list)
    explicit: dict[int, np.ndarray] = field(default_factory=dict)   # row -> all its token times
    error: str = "not served"
    cached: np.ndarray | None = None  # prompt tokens from the prefix cache (a simulation with one), else None
    conversation: np.ndarray | None = None  # multi-turn conversations: each row's conversation and turn
    turn: np.ndarray | None = None
    # request ids are this + the record index in hex: one prefix per run, so requests.jsonl, the returned
    # records and the results database name each request alike
    id_prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:20])

    def __len__(self) -> int:
        return len(self.index)

    def tokens(self, row: int) -> np.ndarray:
        """All token times of ``row`` (ns)."""
        ex = self.explicit.get(row)
        if ex is not None:
            return ex
        if not self.served[row]:
            return np.empty(0, dtype=np.int64)
        dec = self.dec_groups[self.group[row]]
        out = np.empty(1 + self.hi[row] - self.lo[row], dtype=np.int64)
        out[0] = self.first[row]
        out[1:] = dec[self.lo[row]:self.hi[row]]
        return out


def from_result(res: SimResult, index: np.ndarray | list[int] | None = None, first_s: np.ndarray | None = None,
                sched_s: np.ndarray | None = None, error: str | None = None) -> Columns:
    """Columns of one replica's result. ``index``: the record index of each of its requests (default 0..n−1).
    ``first_s``/``sched_s`` override the first-token and scheduled times (the decode pool of a disaggregated
    deployment: the first token is when the KV cache arrived; the request was scheduled at its arrival)."""
    st = res.state
    n = len(st.n_in)
    given_in, given_out, given_arrival = res.arrays or (None, None, None)
    arrival = np.array(st.arrival, dtype=np.float64) if given_arrival is None else given_arrival
    first_f = np.array(st.first, dtype=np.float64)
    end_f = np.array(st.end, dtype=np.float64)
    served = end_f >= 0
    if first_s is not None:
        first_f = np.where(served, first_s, -1.0)
    sched = _ns(arrival if sched_s is None else sched_s)
    first = np.where(served, _ns(first_f), -1)
    end = np.where(served, _ns(end_f), -1)
    n_in = np.array(st.n_in, dtype=np.int64) if given_in is None else given_in
    n_out = np.array(st.n_out, dtype=np.int64) if given_out is None else given_out
    dec_pos = np.flatnonzero(res.iter_decodes)
    dec_ns = _ns(res.iter_end[dec_pos]) if len(dec_pos) else np.empty(0, dtype=np.int64)
    lo = np.zeros(n, dtype=np.int64)
    hi = np.zeros(n, dtype=np.int64)
    explicit: dict[int, np.ndarray] = {}
    # irregular requests (preempted, or with token times from recompute prefills) keep explicit times; the
    # rest have one decode segment (or none: finished by their prefill)
    seg_a = np.array(st.seg_a, dtype=np.int64)
    seg_b = np.array(st.seg_b, dtype=np.int64)
    seg_b[seg_a < 0] = -2
    irregular = sorted(set(st.more) | set(st.extra))
    for k in irregular:
        seg_a[k], seg_b[k] = -1, -2
        if end_f[k] < 0:
            continue
        ts = token_times(res, res.req(k))
        if first_s is not None:
            ts = [float(first_f[k]), *ts[1:]]
        explicit[k] = _ns(np.array(ts))
    seg_a[~served], seg_b[~served] = -1, -2
    has = seg_b >= seg_a
    lo[has] = np.searchsorted(dec_pos, seg_a[has], "left")
    hi[has] = np.searchsorted(dec_pos, seg_b[has], "right")
    n_tok = np.where(served, 1 + hi - lo, 0)
    last = np.where(served, np.where(hi > lo, dec_ns[np.maximum(hi - 1, 0)] if len(dec_ns) else first, first), -1)
    for k, ts in explicit.items():
        n_tok[k] = len(ts)
        last[k] = ts[-1] if len(ts) else -1
    idx = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
    cached = np.array(st.cached, dtype=np.int64) if res.prefix_cache else None
    return Columns(idx, sched, n_in, n_out, first, end, served, n_tok, last, lo, hi, dec_ns, np.zeros(n, dtype=np.int64),
                   [dec_ns], explicit, error or ("not served: the simulation stopped (over capacity)"
                                                 if res.over_capacity else "not served"), cached)


def unserved(index: np.ndarray, sched_s: np.ndarray, n_in: np.ndarray, n_out: np.ndarray, error: str) -> Columns:
    """Rows for requests that were never served (e.g. a prefill pool that stopped over capacity)."""
    n = len(index)
    z = np.zeros(n, dtype=np.int64)
    m = np.full(n, -1, dtype=np.int64)
    return Columns(np.asarray(index, dtype=np.int64), _ns(sched_s), np.asarray(n_in, dtype=np.int64),
                   np.asarray(n_out, dtype=np.int64), m, m.copy(), np.zeros(n, dtype=bool), z, m.copy(), z.copy(),
                   z.copy(), np.empty(0, np.int64), z.copy(), [np.empty(0, np.int64)], {}, error)


def concat(parts: list[Columns]) -> Columns:
    """Several replicas' columns as one, rows sorted by record index."""
    if len(parts) == 1:
        c = parts[0]
        order = np.argsort(c.index)   # record indices are unique: any sort gives this order
        if (order == np.arange(len(order))).all():
            return c
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])
    groups: list[np.ndarray] = []
    group = []
    explicit: dict[int, np.ndarray] = {}
    offset = 0
    for p in parts:
        group.append(p.group + len(groups))
        groups.extend(p.dec_groups)
        explicit.update({offset + k: v for k, v in p.explicit.items()})
        offset += len(p)
    c = Columns(cat("index"), cat("sched"), cat("n_in"), cat("n_out"), cat("first"), cat("end"), cat("served"),
                cat("n_tok"), cat("last"), cat("lo"), cat("hi"), np.empty(0, np.int64), np.concatenate(group),
                groups, explicit, parts[0].error)
    for name in ("cached", "conversation", "turn"):
        if all(getattr(p, name) is not None for p in parts):
            setattr(c, name, cat(name))
    order = np.argsort(c.index)   # unique indices
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    for name in ("index", "sched", "n_in", "n_out", "first", "end", "served", "n_tok", "last", "lo", "hi", "group"):
        setattr(c, name, getattr(c, name)[order])
    c.explicit = {int(inv[k]): v for k, v in explicit.items()}
    for name in ("cached", "conversation", "turn"):
        if getattr(c, name) is not None:
            setattr(c, name, getattr(c, name)[order])
    return c


# ---- records --------------------------------------------------------------------------------------------
_BLOCK = 4096   # rows whose token times are gathered at once (bounds the gathered arrays' memory)


def _token_blocks(c: Columns) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The regular rows' token times, gathered in blocks of rows: (first row, flat times, offsets), row
    ``first + j``'s tokens being ``flat[off[j]:off[j + 1]]`` (empty for explicit and unserved rows: those come
    from :meth:`Columns.tokens`). One numpy gather per block instead of an array built per row."""
    n = len(c)
    groups = c.dec_groups
    goff = np.cumsum([0] + [len(g) for g in groups[:-1]]).astype(np.int64)
    every = np.concatenate([*groups, c.first]) if groups else c.first
    n_dec = len(every) - n
    regular = c.served.copy()
    if c.explicit:
        regular[list(c.explicit)] = False
    for r0 in range(0, n, _BLOCK):
        r1 = min(r0 + _BLOCK, n)
        reg = regular[r0:r1]
        lo, hi = c.lo[r0:r1], c.hi[r0:r1]
        lens = np.where(reg, 1 + hi - lo, 0)
        off = np.zeros(r1 - r0 + 1, dtype=np.int64)
        np.cumsum(lens, out=off[1:])
        starts = np.repeat(off[:-1], lens)
        pos = np.arange(int(off[-1]), dtype=np.int64) - starts            # position within its row
        take = np.repeat(goff[c.group[r0:r1]] + lo - 1, lens) + pos       # decode iteration lo - 1 + pos ...
        has = lens > 0
        take[off[:-1][has]] = n_dec + r0 + np.flatnonzero(has)            # ... and the row's first token first
        yield r0, every[take], off


class _Lists:
    """A Columns' per-row fields as Python lists (one tolist each; indexing lists is what the row loops do)."""

    def __init__(self, c: Columns) -> None:
        self.prefix = c.id_prefix
        self.idx, self.sched, self.n_in, self.n_out = c.index.tolist(), c.sched.tolist(), c.n_in.tolist(), c.n_out.tolist()
        self.first, self.end, self.last = c.first.tolist(), c.end.tolist(), c.last.tolist()
        self.served, self.n_tok = c.served.tolist(), c.n_tok.tolist()
        self.cached = c.cached.tolist() if c.cached is not None else None
        self.conv = c.conversation.tolist() if c.conversation is not None else None
        self.turn = c.turn.tolist() if c.turn is not None else None
        self.error = c.error


def _row_tokens(c: Columns, served: list[bool]) -> Iterator[tuple[int, Any]]:
    """(row, its token times: a numpy slice, an explicit row's list, or None for an unserved row), in order
    (``served``: ``c.served`` as a list, from :class:`_Lists`)."""
    explicit = c.explicit
    for r0, flat, off in _token_blocks(c):
        offs = off.tolist()
        for k in range(r0, min(r0 + _BLOCK, len(c))):
            if not served[k]:
                yield k, None
            else:
                yield k, explicit[k] if k in explicit else flat[offs[k - r0]:offs[k - r0 + 1]]


def _record_dict(L: _Lists, k: int, toks: Any, ones: np.ndarray) -> dict[str, Any]:
    """Row ``k``'s dict with RequestRecord's fields, in its order, with its types."""
    i = L.idx[k]
    s = L.sched[k]
    if toks is not None:
        f, nt = L.first[k], L.n_tok[k]
        d: dict[str, Any] = {
            "index": i, "request_id": f"{L.prefix}{i:012x}", "scheduled_ns": s, "sent_ns": s,
            "headers_ns": f, "first_byte_ns": f, "first_token_ns": f, "first_answer_ns": f,
            "last_token_ns": L.last[k], "end_ns": L.end[k], "chunk_ns": toks, "chunk_tokens": ones[:nt],
            "reasoning_chunks": 0, "input_tokens": L.n_in[k], "prompt_tokens": L.n_in[k],
            "expected_output_tokens": L.n_out[k], "output_tokens": nt, "output_tokens_client": nt,
            "output_tokens_source": "simulated", "length_met": nt >= L.n_out[k], "finish_reason": "length",
            "status": 200, "error": None, "error_type": None,
            "server_timing": None, "server_stamps": None, "retries": 0, "warmup": False, "simulated": True}
        if L.cached is not None:
            d["cached_tokens"] = L.cached[k]
    else:
        d = {"index": i, "request_id": f"{L.prefix}{i:012x}", "scheduled_ns": s, "sent_ns": s,
             "headers_ns": None, "first_byte_ns": None, "first_token_ns": None, "first_answer_ns": None,
             "last_token_ns": None, "end_ns": None, "chunk_ns": [], "chunk_tokens": [], "reasoning_chunks": 0,
             "input_tokens": L.n_in[k], "prompt_tokens": L.n_in[k], "expected_output_tokens": L.n_out[k],
             "output_tokens": None, "output_tokens_client": None, "output_tokens_source": None,
             "length_met": None, "finish_reason": None, "status": None, "error": L.error,
             "error_type": "cancelled", "server_timing": None, "server_stamps": None, "retries": 0,
             "warmup": False, "simulated": True}
    if L.conv is not None and L.turn is not None:
        d["conversation"], d["turn"] = L.conv[k], L.turn[k]
    return d


def _record_dicts(c: Columns) -> Iterator[dict[str, Any]]:
    """One dict per row with RequestRecord's fields, in its order, with its types."""
    L = _Lists(c)
    ones = np.ones(int(c.n_tok.max()) if len(c) else 0, dtype=np.int64)
    for k, toks in _row_tokens(c, L.served):
        yield _record_dict(L, k, toks, ones)


# A served row's line in RequestRecord's field order, around its values: what orjson writes for the row's
# _record_dict (tests/test_sim.py holds the two byte for byte equal), without building the dict. A regular row's
# line is written in five pieces: _HEAD (up to its first token's time), its decode iterations' times (a slice of
# the group's text, below), _MID, its token counts (a slice of ",1,1,..."), _TAIL; an explicit row's is _LINE.
_FIELDS_HEAD = (b'{"index":%d,"request_id":"%s%012x","scheduled_ns":%d,"sent_ns":%d,"headers_ns":%d,'
                b'"first_byte_ns":%d,"first_token_ns":%d,"first_answer_ns":%d,"last_token_ns":%d,"end_ns":%d,')
_FIELDS_TAIL = (b'"reasoning_chunks":0,"input_tokens":%d,"prompt_tokens":%d,"expected_output_tokens":%d,'
                b'"output_tokens":%d,"output_tokens_client":%d,"output_tokens_source":"simulated","length_met":%s,'
                b'"finish_reason":"length","status":200,"error":null,"error_type":null,"server_timing":null,'
                b'"server_stamps":null,"retries":0,"warmup":false,"simulated":true%s}\n')
_LINE = _FIELDS_HEAD + b'"chunk_ns":%s,"chunk_tokens":%s,' + _FIELDS_TAIL
_HEAD = _FIELDS_HEAD + b'"chunk_ns":[%d'
_MID = b'],"chunk_tokens":[1'
_TAIL = b"]," + _FIELDS_TAIL


def _times_text(dec: np.ndarray) -> tuple[memoryview, list[int]]:
    """One group's decode-iteration times as text, ``,t0,t1,...,tn,``, and the offsets of its commas: the
    iterations ``lo:hi`` are ``text[commas[lo]:commas[hi]]`` (``,t_lo,...,t_hi-1``; empty when lo == hi). Every
    iteration's time is formatted once, not once per request that ran in it (up to max_seqs of them)."""
    text = b"," + orjson.dumps(dec, option=_OPT)[1:-1] + b","
    commas = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == ord(",")).tolist()
    return memoryview(text), commas


def _rows(c: Columns, L: _Lists | None = None) -> Iterator[tuple[bytes | memoryview, ...]]:
    """``requests.jsonl``'s lines, one tuple of byte pieces per row, in order: a regular row's line in five
    pieces (:data:`_HEAD` ... :data:`_TAIL`, its token times a slice of :func:`_times_text`), an explicit row's
    from :data:`_LINE` (orjson for its times), an unserved row's by orjson from its :func:`_record_dict`."""
    dumps, opt = orjson.dumps, _OPT | orjson.OPT_APPEND_NEWLINE
    L = L or _Lists(c)
    prefix = L.prefix.encode()
    idx, sched, n_in, n_out, first, end, last, n_tok = L.idx, L.sched, L.n_in, L.n_out, L.first, L.end, L.last, L.n_tok
    cached, conv, turn, served = L.cached, L.conv, L.turn, L.served
    texts = [_times_text(g) for g in c.dec_groups]
    lo, hi, group = c.lo.tolist(), c.hi.tolist(), c.group.tolist()
    ones = memoryview(b",1" * (int(c.n_tok.max()) if len(c) else 0))
    explicit = c.explicit
    no_tokens = np.ones(0, dtype=np.int64)
    for k in range(len(c)):
        if not served[k]:
            yield (dumps(_record_dict(L, k, None, no_tokens), option=opt),)
            continue
        i, f, nt, s = idx[k], first[k], n_tok[k], sched[k]
        extra = b',"cached_tokens":%d' % cached[k] if cached is not None else b""
        if conv is not None and turn is not None:
            extra += b',"conversation":%d,"turn":%d' % (conv[k], turn[k])
        met = b"true" if nt >= n_out[k] else b"false"
        if k in explicit:
            yield (_LINE % (i, prefix, i, s, s, f, f, f, f, last[k], end[k], dumps(explicit[k], option=_OPT),
                            dumps([1] * nt), n_in[k], n_in[k], n_out[k], nt, nt, met, extra),)
            continue
        text, commas = texts[group[k]]
        yield (_HEAD % (i, prefix, i, s, s, f, f, f, f, last[k], end[k], f), text[commas[lo[k]]:commas[hi[k]]],
               _MID, ones[:2 * nt - 2], _TAIL % (n_in[k], n_in[k], n_out[k], nt, nt, met, extra))


def write_jsonl(c: Columns, path: Path) -> None:
    """``requests.jsonl``: one RequestRecord per line (:func:`_rows`, through a 1 MiB write buffer: the file is
    not built whole in memory, and no line is built whole either)."""
    with open(path, "wb", buffering=1 << 20) as f:
        w = f.writelines
        for pieces in _rows(c):
            w(pieces)


def _latencies_ms(c: Columns, rows: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TTFT, TPOT (NaN below 2 tokens) and E2E in ms of ``rows`` (served ones), as ``metrics.ttft_ms``,
    ``tpot_ms`` and ``e2e_ms`` compute them from a record: the same arithmetic on the same integers."""
    first, ntok = c.first[rows], c.n_tok[rows]
    ttft = (first - c.sched[rows]) / NS_PER_MS
    tpot = np.where(ntok >= 2, (c.last[rows] - first) / np.maximum(ntok - 1, 1) / NS_PER_MS, np.nan)
    e2e = (c.end[rows] - c.sched[rows]) / NS_PER_MS
    return ttft, tpot, e2e


def db_rows(c: Columns) -> Iterator[RequestRow]:
    """The results database's request rows (``store.Store.record``'s ``request_rows``): record index, the record
    as JSON (``requests.jsonl``'s line), TTFT, TPOT and E2E in ms (``metrics.ttft_ms``/``tpot_ms``/``e2e_ms``,
    the same arithmetic on the same integers, in numpy) and the error type; without a ``RequestRecord`` built
    per request (tested equal to what recording the records stores)."""
    ttft_a, tpot_a, e2e_a = _latencies_ms(c, slice(None))
    ttft, tpot, e2e = ttft_a.tolist(), tpot_a.tolist(), e2e_a.tolist()
    many, served = (c.n_tok >= 2).tolist(), c.served.tolist()
    for k, (i, pieces) in enumerate(zip(c.index.tolist(), _rows(c))):
        line = b"".join(pieces)[:-1].decode()
        if served[k]:
            yield i, line, ttft[k], tpot[k] if many[k] else None, e2e[k], None
        else:
            yield i, line, None, None, None, "cancelled"


def to_records(c: Columns) -> list[RequestRecord]:
    out = []
    for d in _record_dicts(c):
        if isinstance(d["chunk_ns"], np.ndarray):
            d["chunk_ns"] = d["chunk_ns"].tolist()
            d["chunk_tokens"] = d["chunk_tokens"].tolist()
        out.append(RequestRecord(**d))
    return out


# ---- statistics over (weighted) values --------------------------------------------------------------------
def _at(sorted_v: np.ndarray, cum: np.ndarray | None, pos: np.ndarray) -> np.ndarray:
    """Values at 0-based positions of the expanded sorted sample (``cum``: cumulative weights, None = weight 1)."""
    if cum is None:
        return sorted_v[pos]
    return sorted_v[np.searchsorted(cum, pos, "right")]


def describe_values(values: np.ndarray, weights: np.ndarray | None = None) -> dict[str, Any]:
    """:func:`phasebench.metrics.describe` of ``values`` each repeated ``weights`` times (NaN dropped), without
    expanding them: count, mean, std, min, max, percentiles (numpy's linear rule) and the p99 CI. Only the order
    statistics these need are found: a partition at their ranks (unweighted; ~3x a sort of 10^6 values), or a
    sort of the weighted values with their cumulative weights."""
    v = np.asarray(values, dtype=np.float64)
    w = None if weights is None else np.asarray(weights, dtype=np.int64)
    keep = ~np.isnan(v)
    if w is not None:
        keep &= w > 0
    if not keep.all():
        v = v[keep]
        w = None if w is None else w[keep]
    # + 0.0 makes a -0.0 the 0.0 it equals, so min/max/percentiles cannot differ in sign; numpy's default (SIMD
    # quick) sort: within a run of equal values the order of their weights does not change the value at any rank
    v = v + 0.0
    cum: np.ndarray | None = None
    if w is not None:
        order = np.argsort(v)
        v, w = v[order], w[order]
        cum = np.cumsum(w)
        n = int(cum[-1]) if len(cum) else 0
    else:
        n = len(v)
    if n == 0:
        return {"count": 0}
    h = np.array([(n - 1) * p / 100 for p in PERCENTILES])
    lo = np.floor(h).astype(np.int64)
    lo1 = np.minimum(lo + 1, n - 1)
    ci = quantile_ci_ranks(n, 0.99)
    ranks = np.array([0, n - 1, *lo, *lo1, *(r for r in (ci or ()) if r is not None)], dtype=np.int64)
    if w is None:
        mean = float(v.mean())
        std = float(v.std(ddof=1)) if n > 1 else 0.0
        v = np.partition(v, np.unique(ranks))   # each rank's value in place: the sorted sample's order statistics
    else:
        mean = float(np.dot(v, w) / n)
        std = float(math.sqrt(max(np.dot(w, (v - mean) ** 2), 0.0) / (n - 1))) if n > 1 else 0.0
    at = dict(zip(ranks.tolist(), _at(v, cum, ranks).tolist()))
    out: dict[str, Any] = {"count": n, "mean": mean, "std": std, "min": at[0], "max": at[n - 1]}
    a, b = np.array([at[r] for r in lo.tolist()]), np.array([at[r] for r in lo1.tolist()])
    t = h - lo
    vals = np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)   # numpy's lerp
    for p, x in zip(PERCENTILES, vals):
        out[f"p{p:g}"] = float(x)
    out["p99_ci95"] = None if ci is None else [at[ci[0]], None if ci[1] is None else at[ci[1]]]
    out["too_few_for"] = too_few_for(n)
    return out


# ---- the summary --------------------------------------------------------------------------------------------
@dataclass
class _Gaps:
    """Every inter-token gap of a set of rows, as (value, weight) pairs, and each row's largest gap."""
    values: np.ndarray
    weights: np.ndarray
    row_max: np.ndarray            # NaN where the row has no gap


def _gaps(c: Columns, rows: np.ndarray, explicit_rows: set[int]) -> _Gaps:
    vals, wts = [], []
    row_max = np.full(len(c), np.nan)
    reg = rows[[int(r) not in explicit_rows for r in rows]] if explicit_rows else rows
    for g, dec in enumerate(c.dec_groups):
        sel = reg[c.group[reg] == g] if len(c.dec_groups) > 1 else reg
        sel = sel[c.hi[sel] > c.lo[sel]]
        if not len(sel):
            continue
        lo, hi = c.lo[sel], c.hi[sel]
        # the first decode token's gap is from the first token; the rest are gaps between decode iterations
        first_gap = dec[lo] - c.first[sel]
        vals.append(first_gap.astype(np.float64))
        wts.append(np.ones(len(sel), dtype=np.int64))
        G = np.diff(dec).astype(np.float64) if len(dec) > 1 else np.empty(0)
        # gap j (between dec[j] and dec[j+1]) counts the rows with lo ≤ j < hi − 1
        cover = np.bincount(lo, minlength=len(dec) + 1) - np.bincount(hi - 1, minlength=len(dec) + 1)
        cnt = np.cumsum(cover)[: len(G)]
        vals.append(G)
        wts.append(cnt)
        m = first_gap.astype(np.float64)
        inner = hi - lo > 1
        if inner.any() and len(G):
            # largest gap over G[lo:hi-1] per row: reduceat over (start, stop) pairs
            starts, stops = lo[inner], hi[inner] - 1
            pairs = np.empty(2 * len(starts), dtype=np.int64)
            pairs[0::2], pairs[1::2] = starts, np.minimum(stops, len(G) - 1)
            red = np.maximum.reduceat(G, pairs)[0::2]
            # reduceat stops before pairs[1::2]; a stop at len(G) (the last gap included) needs the tail
            tail = stops == len(G)
            if tail.any():
                red[tail] = np.maximum(red[tail], G[-1])
            m[inner] = np.maximum(m[inner], red)
        row_max[sel] = m
    in_rows = set(rows.tolist()) if explicit_rows else set()
    for k in explicit_rows:
        if k in in_rows:
            d = np.diff(c.explicit[k]).astype(np.float64)
            if len(d):
                vals.append(d)
                wts.append(np.ones(len(d), dtype=np.int64))
                row_max[k] = d.max()
    if not vals:
        return _Gaps(np.empty(0), np.empty(0, dtype=np.int64), row_max)
    return _Gaps(np.concatenate(vals) / NS_PER_MS, np.concatenate(wts), row_max / NS_PER_MS)


def _tokens_in_window(c: Columns, rows: np.ndarray, w0: int, w1: int) -> int:
    """Output tokens of ``rows`` stamped inside [w0, w1]."""
    total = int(((c.first[rows] >= w0) & (c.first[rows] <= w1)).sum())
    ex = set(c.explicit)
    reg = rows[[int(r) not in ex for r in rows]] if ex else rows
    for g, dec in enumerate(c.dec_groups):
        sel = reg[c.group[reg] == g] if len(c.dec_groups) > 1 else reg
        sel = sel[c.hi[sel] > c.lo[sel]]
        if not len(sel) or not len(dec):
            continue
        cover = np.bincount(c.lo[sel], minlength=len(dec) + 1) - np.bincount(c.hi[sel], minlength=len(dec) + 1)
        cnt = np.cumsum(cover)[: len(dec)]
        inw = (dec >= w0) & (dec <= w1)
        total += int(cnt[inw].sum())
    in_rows = set(rows.tolist()) if ex else set()
    for k in ex:
        if k in in_rows:
            ts = c.explicit[k][1:]
            total += int(((ts >= w0) & (ts <= w1)).sum())
    return total


def _rate(times: np.ndarray) -> float | None:
    if len(times) < 2:
        return None
    span = (times.max() - times.min()) / 1e9
    return float((len(times) - 1) / (span or 1e-9))  # a Python float: summary.json goes through orjson


def summarize_columns(c: Columns, ctx: RunContext) -> dict[str, Any]:
    """What :func:`phasebench.metrics.summarize` returns for these requests' records (tests hold them equal)."""
    from ..metrics import describe

    n = len(c)
    if n == 0:
        return _empty_summary(ctx)
    w0 = int(c.sched.min()) + int(ctx.warmup_s * 1e9)
    ends = c.end[c.served]
    w1 = (int(ends.max()) if len(ends) else int(c.sched.max())) - int(ctx.cooldown_s * 1e9)
    w1 = max(w1, w0)
    span_s = max((w1 - w0) / 1e9, 1e-9)
    in_win = (c.sched >= w0) & (c.sched <= w1)
    ok_m = in_win & c.served
    ok = np.flatnonzero(ok_m)
    failed = int((in_win & ~c.served).sum())
    ex_rows = set(c.explicit)

    out_tokens_in_win = _tokens_in_window(c, np.flatnonzero(c.served), w0, w1)
    done_m = c.served & (c.end >= w0) & (c.end <= w1)
    in_tokens_in_win = int(c.n_in[done_m].sum())

    ttft, tpot, e2e = _latencies_ms(c, ok)
    ntok = c.n_tok[ok]
    two = ntok >= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        ptps = np.where((ttft != 0) & (c.n_in[ok] != 0), c.n_in[ok] / (ttft / 1000), np.nan)
        dtps = np.where(two & (tpot != 0), 1000 / tpot, np.nan)
    gaps = _gaps(c, ok, ex_rows)
    itl = describe_values(gaps.values, gaps.weights)
    lag = describe_values(np.zeros(int(in_win.sum())))
    d_ttft = describe_values(ttft)     # sent = scheduled and the first answer token = the first token
    m = {
        "ttft_ms": d_ttft,
        "ttft_sent_ms": _copy(d_ttft),
        "send_lag_ms": lag,
        "ttfot_ms": _copy(d_ttft),
        "tpot_ms": describe_values(tpot),
        "itl_chunk_ms": itl,
        "itl_token_ms": _copy(itl),
        "e2e_ms": describe_values(e2e),
        "prefill_tps": describe_values(ptps),
        "decode_tps": describe_values(dtps),
        "input_tokens": describe_values(c.n_in[ok].astype(np.float64)),
        "output_tokens": describe_values(ntok.astype(np.float64)),
    }
    slo = ctx.slo
    met_m = np.ones(len(ok), dtype=bool)
    for limit, vals in ((slo.ttft_ms, ttft), (slo.tpot_ms, tpot), (slo.e2e_ms, e2e), (slo.itl_ms, gaps.row_max[ok])):
        if limit is not None:
            met_m &= np.isnan(vals) | (vals <= limit)
    met = int(met_m.sum())
    total_in_win = int(in_win.sum())
    slo_block: dict[str, Any] = {"slo": slo.model_dump(), "met": met, "total": total_in_win}
    slo_block["attainment"] = met / total_in_win if total_in_win else None
    slo_block["goodput"] = met / span_s
    constraints = []
    for name, limit, vals in (("ttft_ms", slo.ttft_ms, ttft), ("tpot_ms", slo.tpot_ms, tpot), ("e2e_ms", slo.e2e_ms, e2e)):
        if limit is None:
            continue
        v = vals[~np.isnan(vals)]
        got = float(np.percentile(v, slo.percentile)) if len(v) else None
        constraints.append({"metric": name, "percentile": slo.percentile, "limit": limit, "value": got,
                            "ok": got is not None and got <= limit})
    slo_block["constraints"] = constraints
    errors = Counter({"cancelled": failed}) if failed else Counter()
    length_mismatch = int((ntok < c.n_out[ok]).sum())
    sends = c.sched[in_win]
    client = {"cpu_s": ctx.client_cpu_s, "wall_s": ctx.wall_s,
              "cpu_fraction": ctx.client_cpu_s / ctx.wall_s if ctx.client_cpu_s is not None and ctx.wall_s else None,
              "max_in_flight": _max_in_flight(c.sched[c.served], c.end[c.served]), "target_rate": ctx.target_rate,
              "scheduled_rate": _rate(sends), "achieved_send_rate": _rate(sends),
              "loop_lag_ms": describe(ctx.loop_lag_ms or []) if ctx.loop_lag_ms is not None else None,
              "host": ctx.host, "transport": ctx.transport,
              # kernel-stamp figures exist only for the raw transport; a simulated run has none
              "read_delay_ms": None, "ttft_uncertainty_ms": None, "coalesced_reads": None}
    # metrics.buffered: ≥ 4 tokens, yet one chunk or chunks closer than BUFFERED_NS_PER_TOKEN per token
    four = ntok >= 4
    buf = four & ((ntok <= 1) | ((c.last[ok] - c.first[ok]) < BUFFERED_NS_PER_TOKEN * (ntok - 1)))
    streams = {"buffered": int(buf.sum()), "eligible": int(four.sum())}
    valid, reasons, warnings = check_validity(m, client, errors, length_mismatch, total_in_win, span_s, ctx, slo_block,
                                              streams, completed=int(done_m.sum()))
    summary: dict[str, Any] = {
        "completed": len(ok), "failed": failed, "duration": span_s, "max_concurrency": ctx.concurrency,
        "request_rate": ctx.target_rate if ctx.target_rate is not None else "inf", "burstiness": ctx.burstiness,
        "total_input_tokens": int(c.n_in[ok].sum()), "total_output_tokens": int(ntok.sum()),
        "request_throughput": int(done_m.sum()) / span_s, "output_throughput": out_tokens_in_win / span_s,
        "total_token_throughput": (out_tokens_in_win + in_tokens_in_win) / span_s,
        "request_goodput": slo_block["goodput"] if not slo.is_empty() else None,
    }
    for short, key in (("ttft", "ttft_ms"), ("tpot", "tpot_ms"), ("itl", "itl_chunk_ms"), ("e2el", "e2e_ms")):
        s = m[key]
        summary[f"mean_{short}_ms"] = s.get("mean")
        summary[f"median_{short}_ms"] = s.get("p50")
        summary[f"std_{short}_ms"] = s.get("std")
        for p in (90, 95, 99):
            summary[f"p{p}_{short}_ms"] = s.get(f"p{p}")
    summary["phasebench"] = {
        "scenario": ctx.scenario, "valid": valid, "partial": ctx.partial, "reasons": reasons, "warnings": warnings,
        "window_ns": [w0, w1], "metrics": m, "slo": slo_block, "errors": dict(errors), "client": client,
        "streams": streams, "tokens": {"usage_minus_client": describe([]), "length_mismatch": length_mismatch,
                   "output_tokens_source": {"simulated": len(ok)} if len(ok) else {}},
        "server_timing": {"prompt_ms": describe([]), "tpot_ms": describe([])},
        "workload": _workload(c, ok),
    }
    return summary


def _workload(c: Columns, ok: np.ndarray) -> dict[str, Any]:
    """``metrics.workload_block``: turns from simulated conversations, cached tokens from a simulation with a
    prefix cache (then from its records, the same function the measured summary uses)."""
    if c.cached is None and c.turn is None:
        return workload_block([])
    recs = to_records(c)
    return workload_block([recs[k] for k in ok.tolist()])


def _copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, list) else v for k, v in d.items()}


def _max_in_flight(start: np.ndarray, end: np.ndarray) -> int:
    """metrics.max_in_flight: at equal times an end is counted before a start."""
    if not len(start):
        return 0
    t = np.concatenate([start, end])
    d = np.concatenate([np.ones(len(start), np.int64), -np.ones(len(end), np.int64)])
    order = np.lexsort((d, t))
    return int(max(np.cumsum(d[order]).max(), 0))


def _empty_summary(ctx: RunContext) -> dict[str, Any]:
    from ..metrics import summarize

    return summarize([], ctx)
