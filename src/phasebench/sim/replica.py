"""A discrete-event simulator of one serving replica with continuous batching, as vLLM schedules it.

Each iteration the scheduler builds a batch from the running sequences and the waiting queue:

- running sequences that finished prefill decode one token each (up to ``max_seqs``);
- with ``chunked_prefill`` the rest of the ``max_batched_tokens`` budget goes to prefill chunks (running
  partial prefills first, then waiting requests in arrival order), so decodes never stall behind a long prompt;
- without it, an iteration is either prefill-only (waiting requests whose whole prompts fit the budget) or
  decode-only, prefill first (vLLM's default before chunked prefill);
- KV cache: ``kv_blocks`` blocks of ``block_size`` tokens. A request is admitted only if its prompt's blocks
  fit; when a decode step would run out, the most recently admitted sequence is preempted (its blocks freed,
  its work recomputed later as a prompt of prompt + generated tokens), as vLLM's recompute preemption does;
- ``prefix_cache`` (with each request's prompt block keys, ``prefix_keys``): a block-granular prefix cache
  (vLLM's automatic prefix caching): a prompt's leading whole blocks already cached are not prefilled; cached
  blocks live in the KV memory the running sequences leave free, evicted least recently used first;
- conversations (``follow``/``think``): a request whose turn follows another arrives ``think`` seconds after
  that one's last token (its history's blocks, prompt and answer, are then in the prefix cache);
- ``batching=False`` (SRAM pipelines such as Groq's): one sequence at a time, start to finish;
- ``static=True``: static batching, the comparison baseline: a batch is admitted only when the last one
  has finished entirely.

The iteration's duration comes from a :class:`~phasebench.sim.profile.Profile`. Tokens are stamped at the end
of the iteration that produced them. The hot loop is O(1) per iteration plus O(log n) per request event;
per-token times are expanded from iteration end times at the end.
"""

from __future__ import annotations

import bisect
import gc
import heapq
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .profile import Profile


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused (and resumed if it ran before): a simulation allocates millions of
    small lists and tuples, none in a reference cycle (refcounting frees them), so the collector's passes over
    them find nothing and cost a tenth to a third of the run's CPU time (benchmarks/simulator_speed.py)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class NeverFits(ValueError):
    """A request needs more KV cache than the replica has at all."""


@dataclass
class SchedulerConfig:
    max_seqs: int = 256
    max_batched_tokens: int = 8192
    chunked_prefill: bool = True
    block_size: int = 16
    kv_blocks: int = 1 << 30
    batching: bool = True
    static: bool = False
    max_queue: int = 2048             # waiting requests (while arrivals continue) that declare it over capacity
    max_sim_seconds: float = 86_400.0
    prefix_cache: bool = False        # reuse cached prompt blocks (needs prefix_keys)


@dataclass(slots=True)
class Req:
    """One request's state as the simulation left it (``SimResult.req``; the loop itself keeps ``_Reqs`` lists)."""

    idx: int
    arrival: float
    n_in: int
    n_out: int
    prompt: int = 0                   # tokens to prefill: n_in, or n_in + generated after a preemption
    prefilled: int = 0
    generated: int = 0                # tokens produced (kept up to date except while decoding: see gen())
    first_token: float = -1.0
    end: float = -1.0
    order: int = 0                    # admission order (preemption takes the latest)
    d_start: int = 0                  # decode-iteration count when the current decode segment began
    g_start: int = 0                  # tokens generated when it began
    start_iter: int = 0               # first iteration index of the current decode segment
    target: int = 0                   # decode-iteration count at which it finishes
    segments: list[tuple[int, int]] = field(default_factory=list)   # decode iteration ranges [a, b]
    extra: list[float] = field(default_factory=list)                # token times not from decode steps
    preemptions: int = 0
    cached: int = 0                   # prompt tokens served from the prefix cache at first admission


class PrefixCache:
    """Block keys in LRU order; ``match`` counts the leading keys present (and refreshes them)."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        from collections import OrderedDict

        self._keys: "OrderedDict[int, None]" = OrderedDict()

    def match(self, keys: list[int]) -> int:
        k = 0
        d = self._keys
        for key in keys:
            if key not in d:
                break
            d.move_to_end(key)
            k += 1
        return k

    def peek(self, keys: list[int]) -> int:
        """``match`` without refreshing anything (to compare caches before choosing one)."""
        k = 0
        for key in keys:
            if key not in self._keys:
                break
            k += 1
        return k

    def insert(self, keys: list[int], capacity: int) -> None:
        d = self._keys
        for key in keys:
            d[key] = None
            d.move_to_end(key)
        while len(d) > max(capacity, 0):
            d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._keys)


class _Reqs:
    """The requests' state as parallel lists (one entry per request), which the hot loop indexes: creating 10⁵
    ``Req`` objects cost more than scheduling them. ``SimResult.req``/``reqs`` give ``Req`` views."""

    __slots__ = ("adm", "arrival", "cached", "d_start", "end", "extra", "first", "g_start", "generated", "more", "n_in",
                 "n_out", "preempts", "prefilled", "prompt", "seg_a", "seg_b", "start_iter", "tgt")

    def __init__(self, arrival: list[float], n_in: list[int], n_out: list[int]) -> None:
        n = len(n_in)
        self.arrival, self.n_in, self.n_out = arrival, n_in, n_out
        self.prompt = list(n_in)          # tokens to prefill: n_in, or n_in + generated after a preemption
        self.prefilled = [0] * n
        self.generated = [0] * n          # tokens produced (kept up to date except while decoding)
        self.first = [-1.0] * n
        self.end = [-1.0] * n
        self.adm = [0] * n                # admission order (preemption takes the latest)
        self.d_start = [0] * n            # decode-iteration count when the current decode segment began
        self.g_start = [0] * n            # tokens generated when it began
        self.start_iter = [0] * n         # first iteration index of the current decode segment
        self.tgt = [0] * n                # decode-iteration count at which it finishes
        self.preempts = [0] * n
        self.cached = [0] * n             # prompt tokens served from the prefix cache at first admission
        self.seg_a = [-1] * n             # the decode segment [a, b] of a request never preempted (a = -1: none)
        self.seg_b = [-1] * n
        self.more: dict[int, list[tuple[int, int]]] = {}   # a preempted request's segments, all of them
        self.extra: dict[int, list[float]] = {}            # token times not from decode steps (recompute prefills)


@dataclass
class SimResult:
    state: _Reqs
    iter_end: np.ndarray              # end time of each iteration (s)
    iter_decodes: np.ndarray          # whether the iteration ran decode steps
    iterations: int
    preemptions: int
    over_capacity: bool
    sim_seconds: float
    notes: list[str]
    prefix_cache: bool = False
    # (n_in, n_out, arrival) as the arrays they came in as (arrival None where the simulation set it): from_result
    # takes them instead of converting state's 10⁶-entry lists back
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def req(self, i: int) -> Req:
        """Request ``i`` as a ``Req``."""
        s = self.state
        segs = list(s.more[i]) if i in s.more else ([(s.seg_a[i], s.seg_b[i])] if s.seg_a[i] >= 0 else [])
        return Req(i, s.arrival[i], s.n_in[i], s.n_out[i], s.prompt[i], s.prefilled[i], s.generated[i], s.first[i],
                   s.end[i], s.adm[i], s.d_start[i], s.g_start[i], s.start_iter[i], s.tgt[i], segs,
                   list(s.extra.get(i, ())), s.preempts[i], s.cached[i])

    @cached_property
    def reqs(self) -> list[Req]:
        return [self.req(i) for i in range(len(self.state.n_in))]


def simulate(arrivals: list[float] | np.ndarray, n_in: list[int], n_out: list[int], profile: Profile,
             cfg: SchedulerConfig, closed_concurrency: int | None = None, decode_only: bool = False,
             prefix_keys: list[list[int]] | None = None, follow: list[int] | None = None,
             think: list[float] | None = None) -> SimResult:
    """Serve the requests. Open loop: ``arrivals`` are times (s). Closed loop (``closed_concurrency``): the
    first N arrive at 0 and each completion releases the next request at that moment.

    ``decode_only``: requests arrive with their KV cache already filled and their first token made (the decode
    pool of a disaggregated deployment); they join the running batch as soon as KV and a seat allow.

    ``prefix_keys``: each request's block keys (its prompt's, and may go on over its answer's blocks); the
    leading keys of the prompt's whole blocks are matched, all of them cached. ``follow[i]`` (≥ 0): the request
    that request ``i``'s completion releases, ``think[i]`` seconds later (the next turn of a conversation); such
    a request is not in ``arrivals`` (open loop: its entry is ignored) nor among the closed loop's queue, whose
    completion of a conversation's last turn releases the next conversation."""
    with gc_paused():
        return _simulate(arrivals, n_in, n_out, profile, cfg, closed_concurrency, decode_only, prefix_keys, follow, think)


def _simulate(arrivals: list[float] | np.ndarray, n_in: list[int], n_out: list[int], profile: Profile,
             cfg: SchedulerConfig, closed_concurrency: int | None = None, decode_only: bool = False,
             prefix_keys: list[list[int]] | None = None, follow: list[int] | None = None,
             think: list[float] | None = None) -> SimResult:
    n = len(n_in)
    bs = cfg.block_size
    cap = cfg.kv_blocks * bs            # KV capacity in tokens
    slack = bs - 1                      # worst case: a partly filled last block per sequence
    ins_a, outs_a = np.asarray(n_in, dtype=np.int64), np.asarray(n_out, dtype=np.int64)
    if n:
        need = -(-(ins_a + outs_a) // bs)
        bad = np.flatnonzero(need > cfg.kv_blocks)
        if len(bad):
            i = int(bad[0])
            raise NeverFits(f"request {i} needs {n_in[i] + n_out[i]} tokens of KV cache; the replica holds "
                            f"{cfg.kv_blocks} blocks ({cap} tokens): this workload can never fit")
    ins, outs = ins_a.tolist(), outs_a.tolist()
    pending: deque[int] = deque()
    followers = np.zeros(n, dtype=bool)
    if follow is not None:
        f = np.asarray(follow, dtype=np.int64)
        followers[f[f >= 0]] = True
    if closed_concurrency:
        st = _Reqs([0.0] * n, ins, outs)
        pending.extend(np.flatnonzero(~followers).tolist())
        arrive_q = deque(pending.popleft() for _ in range(min(closed_concurrency, len(pending))))
    else:
        a = np.where(followers, np.inf, np.asarray(arrivals, dtype=np.float64))
        al = a.tolist()
        st = _Reqs(al, ins, outs)
        order_ = np.argsort(a, kind="stable")[: n - int(followers.sum())].tolist()   # = sorted((arrival, i))
        arrive_q = deque(order_)   # request indices in arrival order; their times are st.arrival's
    # what a completion lets in; nothing (None) in an open loop without conversations
    release = _Release(st, follow, think, pending, arrive_q, bool(closed_concurrency)) \
        if follow is not None or closed_concurrency else None
    max_seqs = cfg.max_seqs if cfg.batching else 1
    budget = cfg.max_batched_tokens if cfg.batching else 1 << 40

    t = 0.0
    waiting: deque[int] = deque()
    prefilling: list[int] = []
    decoding: set[int] = set()
    heap: list[tuple[int, int]] = []
    D = 0
    sum_ctx = 0                        # Σ (n_in + generated) over decoding sequences
    kv_tokens = 0                      # KV tokens held (prefill reservations + decoding contexts)
    iter_end: list[float] = []
    iter_dec: list[bool] = []
    order = 0
    preemptions = 0
    done = 0
    over = False
    notes: list[str] = []
    static_open = True
    pc = PrefixCache() if cfg.prefix_cache and prefix_keys is not None and not decode_only else None
    n_blocks = cfg.kv_blocks

    chunked = cfg.chunked_prefill
    static = cfg.static
    max_queue, max_sim = cfg.max_queue, cfg.max_sim_seconds
    iteration = profile.iteration
    heappush, heappop = heapq.heappush, heapq.heappop
    arrival, prompt, prefilled, generated = st.arrival, st.prompt, st.prefilled, st.generated
    first, end, adm, d_start, g_start = st.first, st.end, st.adm, st.d_start, st.g_start
    start_iter, tgt, preempts = st.start_iter, st.tgt, st.preempts
    seg_a, seg_b, more, extra, cached = st.seg_a, st.seg_b, st.more, st.extra, st.cached
    # the loop below uses no closures: every name it touches stays a fast local

    while done < n:
        while arrive_q and arrival[arrive_q[0]] <= t:
            waiting.append(arrive_q.popleft())
        # unstable: the queue keeps growing while requests still arrive (an offline burst is not a backlog)
        if (arrive_q and len(waiting) > max_queue) or t > max_sim:
            over = True
            notes.append(f"stopped at t={t:.1f} s with {len(waiting)} requests waiting: the offered load exceeds "
                         "this replica's capacity (over capacity); lower the rate or add replicas")
            break
        if not waiting and not prefilling and not decoding:
            if not arrive_q:
                break
            t = arrival[arrive_q[0]]
            continue
        if decoding and not prefilling and not static and heap:
            # Fast-forward: while nothing can join (no free seat, or nothing waiting until the next arrival), each
            # iteration is a plain decode step of the same batch. Run them here, up to (not including) the step
            # in which the next sequence finishes, and stop where the loop below would act differently: a KV
            # overflow, an arrival that could be admitted, or the over-capacity limits.
            nd = len(decoding)
            seats = max_seqs - nd
            steps = heap[0][0] - D - 1
            if steps > 0 and (seats <= 0 or not waiting):
                room = cap - kv_tokens - nd - nd * slack      # KV check before each step: room ≥ j·nd
                if room < 0:
                    steps = 0
                elif nd:
                    steps = min(steps, room // nd + 1)
                if steps > 0:
                    t_stop = max_sim
                    if seats > 0 and arrive_q:
                        t_stop = arrival[arrive_q[0]]         # it could be admitted: stop once it has arrived
                    elif arrive_q and len(arrive_q) > max_queue - len(waiting):
                        t_stop = min(t_stop, arrival[arrive_q[max(max_queue - len(waiting), 0)]])   # over capacity
                    k = 0
                    while k < steps:
                        dt = iteration(0.0, 0.0, nd, float(sum_ctx))
                        t += 1e-9 if 1e-9 > dt else dt         # max(dt, 1e-9) without the call
                        iter_end.append(t)
                        sum_ctx += nd
                        k += 1
                        if t >= t_stop:
                            break
                    iter_dec.extend([True] * k)
                    D += k
                    kv_tokens += k * nd
                    continue
        # ---- build the batch ---------------------------------------------------------------------------------
        admit = (not static) or static_open
        want_prefill = bool(prefilling) or (bool(waiting) and admit)
        decode_now = bool(decoding) and (chunked or not want_prefill)
        if decode_now:
            nd = len(decoding)
            if kv_tokens + nd + (nd + len(prefilling)) * slack > cap:   # a decode step would overflow KV
                kv_tokens, sum_ctx, k = _preempt(st, decoding, prefilling, waiting, len(iter_end), D, kv_tokens,
                                                 sum_ctx, cap, slack)
                preemptions += k
            decode_now = bool(decoding)
        batch = len(decoding) if decode_now else 0
        tokens_left = budget - batch
        chunks: list[tuple[int, int]] = []
        sum_n = sum_n2 = 0         # Σ chunk, Σ chunk·(2·prefix + chunk): each chunk attends to its prefix
        joined: list[int] = []
        if not decode_now or chunked:
            for i in prefilling:
                if tokens_left <= 0:
                    break
                take = prompt[i] - prefilled[i]
                if chunked:
                    take = min(take, tokens_left)
                elif take > tokens_left and chunks:
                    break
                chunks.append((i, take))
                sum_n += take
                sum_n2 += take * (2 * prefilled[i] + take)
                tokens_left -= take
            running = len(decoding) + len(prefilling)
            seats = max_seqs - running
            grow = len(decoding) if decode_now else 0
            while admit and waiting and seats > 0 and tokens_left > 0:
                j = waiting[0]
                pj = prompt[j]
                if kv_tokens + pj + grow + (running + 1) * slack > cap:   # kv_ok
                    break
                if pc is not None:
                    keys = prefix_keys[j]      # type: ignore[index]
                    hit = min(pc.match(keys[: ins[j] // bs]) * bs, pj - 1)
                    prefilled[j] = max(hit, 0)
                    if preempts[j] == 0:
                        cached[j] = prefilled[j]
                take = pj - prefilled[j]
                if take > tokens_left:
                    if chunked:
                        take = tokens_left
                    elif chunks:
                        prefilled[j] = 0
                        break
                if pc is not None:
                    pc.insert(keys, n_blocks - (kv_tokens + pj) // bs)
                waiting.popleft()
                order += 1
                adm[j] = order
                seats -= 1
                if decode_only and preempts[j] == 0:
                    first[j], generated[j] = arrival[j], 1
                    kv_tokens += ins[j] + 1
                    if outs[j] <= 1:
                        kv_tokens -= ins[j] + 1
                        end[j] = t
                        done += 1
                        if release is not None:
                            release(j, t)
                        continue
                    joined.append(j)   # joins the running batch after this iteration
                    continue
                kv_tokens += pj
                prefilling.append(j)
                running += 1
                chunks.append((j, take))
                sum_n += take
                sum_n2 += take * (2 * prefilled[j] + take)
                tokens_left -= take
            if static and chunks:
                static_open = False
        if joined and not chunks and not decode_now:
            for i in joined:
                decoding.add(i)
                sum_ctx += ins[i] + 1
                d_start[i], g_start[i], start_iter[i] = D, 1, len(iter_end)
                tgt[i] = D + (outs[i] - 1)
                heappush(heap, (tgt[i], i))
            continue
        if not chunks and not decode_now:
            nd = len(decoding)
            if kv_tokens + nd + (nd + len(prefilling)) * slack > cap:
                kv_tokens, sum_ctx, k = _preempt(st, decoding, prefilling, waiting, len(iter_end), D, kv_tokens,
                                                 sum_ctx, cap, slack)
                preemptions += k
            if decoding:
                decode_now, batch = True, len(decoding)
            elif not prefilling:
                if arrive_q:          # the queue head waits for KV nothing holds: impossible, guarded above
                    t = max(t, arrival[arrive_q[0]])
                    continue
                raise NeverFits("waiting requests need more KV cache than the replica has")
        dt = iteration(float(sum_n), float(sum_n2), batch, float(sum_ctx) if batch else 0.0)
        t += 1e-9 if 1e-9 > dt else dt
        it = len(iter_end)
        iter_end.append(t)
        iter_dec.append(batch > 0)
        # ---- apply it ------------------------------------------------------------------------------------
        if batch:
            D += 1
            sum_ctx += batch
            kv_tokens += batch
            while heap and heap[0][0] <= D:
                target, i = heappop(heap)
                if i not in decoding or tgt[i] != target:
                    continue                      # stale entry of a preempted sequence
                decoding.discard(i)
                sum_ctx -= ins[i] + outs[i]
                kv_tokens -= ins[i] + outs[i]
                generated[i] = outs[i]
                if preempts[i]:
                    more[i].append((start_iter[i], it))
                else:
                    seg_a[i], seg_b[i] = start_iter[i], it
                end[i] = t
                done += 1
                if release is not None:
                    release(i, t)
        if joined:
            for i in joined:
                decoding.add(i)
                sum_ctx += ins[i] + 1
                d_start[i], g_start[i], start_iter[i] = D, 1, it + 1
                tgt[i] = D + (outs[i] - 1)
                heappush(heap, (tgt[i], i))
        for i, c in chunks:
            p = prefilled[i] + c
            prefilled[i] = p
            if p < prompt[i]:
                continue
            prefilling.remove(i)
            g = generated[i] + 1                  # the prefill's last position yields a token
            generated[i] = g
            if first[i] < 0:
                first[i] = t
            else:
                extra.setdefault(i, []).append(t)   # a resumed sequence's recompute yields its next token
            kv_tokens += ins[i] + g - prompt[i]
            if g >= outs[i]:
                kv_tokens -= ins[i] + g
                end[i] = t
                done += 1
                if release is not None:
                    release(i, t)
                continue
            decoding.add(i)
            sum_ctx += ins[i] + g
            d_start[i], g_start[i], start_iter[i] = D, g, it + 1
            tgt[i] = D + (outs[i] - g)
            heappush(heap, (tgt[i], i))
        if static and not static_open and not prefilling and not decoding:
            static_open = True
    if followers.any():
        for i in range(n):
            if arrival[i] == np.inf:      # a later turn never released (the run stopped over capacity)
                arrival[i] = t
    # the inputs as arrays, for from_result (arrivals only where the loop did not set them: an open loop alone)
    arrays = (ins_a, outs_a, None if closed_concurrency or follow is not None else a)
    return SimResult(st, np.array(iter_end), np.array(iter_dec, dtype=bool), len(iter_end), preemptions, over, t, notes,
                     pc is not None, arrays)


class _Release:
    """What a completion lets in: the conversation's next turn after its think time, else (closed loop) the
    next queued request at once."""

    __slots__ = ("arrival", "arrive_q", "closed", "follow", "pending", "think")

    def __init__(self, st: _Reqs, follow: list[int] | None, think: list[float] | None, pending: deque[int],
                 arrive_q: deque[int], closed: bool) -> None:
        self.arrival, self.follow, self.pending = st.arrival, follow, pending
        self.arrive_q, self.closed = arrive_q, closed
        self.think = think if think is not None else [0.0] * len(st.arrival)

    def _key(self, j: int) -> tuple[float, int]:
        return self.arrival[j], j

    def __call__(self, i: int, t: float) -> None:
        nxt = self.follow[i] if self.follow is not None else -1
        if nxt >= 0:
            at = t + self.think[i]
            self.arrival[nxt] = at
            # think times differ: keep the queue in (time, index) order
            bisect.insort(self.arrive_q, nxt, key=self._key)
        elif self.closed and self.pending:
            nxt = self.pending.popleft()
            self.arrival[nxt] = t
            self.arrive_q.append(nxt)


def _preempt(st: _Reqs, decoding: set[int], prefilling: list[int], waiting: deque[int], n_iter: int, D: int,
             kv_tokens: int, sum_ctx: int, cap: int, slack: int) -> tuple[int, int, int]:
    """Before a decode step (each decoding sequence grows by one token): preempt LIFO until KV fits, as vLLM's
    recompute preemption; returns (KV tokens held, Σctx, sequences preempted)."""
    k = 0
    adm = st.adm
    while decoding and kv_tokens + len(decoding) + (len(decoding) + len(prefilling)) * slack > cap:
        v = max(decoding, key=adm.__getitem__)
        g = st.g_start[v] + (D - st.d_start[v])          # tokens generated so far
        n_in = st.n_in[v]
        decoding.discard(v)
        sum_ctx -= n_in + g
        kv_tokens -= n_in + g
        st.more.setdefault(v, []).append((st.start_iter[v], n_iter - 1))
        st.generated[v] = g
        st.prompt[v], st.prefilled[v] = n_in + g, 0   # recompute: prompt + generated, as a new prefill
        st.preempts[v] += 1
        k += 1
        waiting.appendleft(v)
    return kv_tokens, sum_ctx, k


def token_times(res: SimResult, r: Req) -> list[float]:
    """Times of ``r``'s output tokens: the first, any from recompute prefills, one per decode iteration it was in."""
    if r.first_token < 0:
        return []
    out = [r.first_token, *r.extra]
    for a, b in r.segments:
        if b >= a:
            out.extend(res.iter_end[a:b + 1][res.iter_decodes[a:b + 1]].tolist())
    out.sort()
    return out


def blocks_for_memory(free_bytes: float, kv_bytes_per_token: float, block_size: int) -> int:
    return max(int(free_bytes // (kv_bytes_per_token * block_size)), 0) if kv_bytes_per_token > 0 else 1 << 30

