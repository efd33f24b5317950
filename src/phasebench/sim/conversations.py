"""Multi-turn conversations for the simulator: ``--turns N[:sd]`` turns per conversation, each turn's prompt the
history (every earlier user message and answer) plus a new user message of ``--input-tokens``, the next turn
arriving ``--think-time`` after the answer's last token.

The requests are numbered conversation by conversation, turn by turn. Each carries its prompt's layout as
(content key, tokens) segments, so the prefix cache sees what the measured run's server sees: turn k+1's
prompt begins with turn k's prompt and answer, token for token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..schedule import make_schedule
from ..spec import RunSpec, SpecError, TimeDist
from ..workload.traces import block_keys
from .run import _lengths


@dataclass
class SimConversations:
    n_in: list[int]                   # prompt tokens of each request: history + the new user message
    n_out: list[int]
    conversation: np.ndarray          # each request's conversation and turn (0-based)
    turn: np.ndarray
    follow: list[int]                 # the request that this one's completion releases (-1: the last turn)
    think: list[float]                # seconds from this request's last token to the next turn
    segments: list[list[tuple[Any, int]]]   # prompt + answer, as (content key, tokens)

    @property
    def firsts(self) -> np.ndarray:
        return np.flatnonzero(self.turn == 0)

    def keys(self, block_size: int) -> list[list[int]]:
        """Block keys of each request's prompt and answer (the answer's blocks are cached for the next turn)."""
        return [block_keys(s, block_size) for s in self.segments]

    def subset(self, conversations: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """The requests of some conversations (a replica's share): their indices, and ``follow`` renumbered to
        positions among them."""
        idx = np.flatnonzero(np.isin(self.conversation, conversations))
        pos = {int(i): k for k, i in enumerate(idx.tolist())}
        return idx, [pos.get(self.follow[i], -1) for i in idx.tolist()]


def _seconds(dist: TimeDist, n: int, rng: np.random.Generator) -> list[float]:
    if dist.stddev <= 0:
        return [float(dist.mean)] * n
    return np.maximum(rng.normal(dist.mean, dist.stddev, size=n), 0.0).tolist()


def build(spec: RunSpec, n_conversations: int) -> SimConversations:
    """``n_conversations`` conversations of the spec's turns, user and answer lengths, and think times."""
    assert spec.turns is not None
    if spec.dataset is not None:
        raise SpecError("simulate --turns makes synthetic conversations (a --dataset's are replayed by `run`)")
    rng = np.random.default_rng([spec.seed, 7919])
    counts = _lengths(spec.turns, n_conversations, rng)
    n_in, n_out, conv, turn, follow, think, segments = [], [], [], [], [], [], []
    for c, t in enumerate(counts):
        users = _lengths(spec.input_tokens, t, rng)
        outs = _lengths(spec.output_tokens, t, rng)
        waits = _seconds(spec.think_time, t, rng)
        history: list[tuple[Any, int]] = []
        for k in range(t):
            history = [*history, (("user", c, k), users[k])]
            n_in.append(sum(x for _, x in history))
            n_out.append(outs[k])
            conv.append(c)
            turn.append(k)
            follow.append(len(n_in) if k + 1 < t else -1)
            think.append(waits[k])
            history = [*history, (("answer", c, k), outs[k])]
            segments.append(history)
    return SimConversations(n_in, n_out, np.array(conv, dtype=np.int64), np.array(turn, dtype=np.int64), follow,
                            think, segments)


def conversation_requests(spec: RunSpec) -> tuple[np.ndarray | None, int | None, float | None, SimConversations]:
    """(arrival times, closed-loop concurrency, target rate, conversations). Open loop: the schedule's offsets are
    when conversations *start* (``arrivals`` holds them at each first turn, NaN at later turns); closed loop:
    ``--concurrency`` users, each holding its slot for a whole conversation, ``--requests`` conversations."""
    if spec.scenario.value == "server" and (not spec.rate or spec.rate[0] <= 0):
        raise SpecError("the server scenario needs a rate > 0")
    sched = make_schedule(spec)
    if sched.kind == "open":
        assert sched.offsets_ns is not None
        starts = sched.offsets_ns / 1e9
        convs = build(spec, len(starts))
        arr = np.full(len(convs.n_in), np.nan)
        arr[convs.firsts] = starts
        return arr, None, sched.target_rate, convs
    if not spec.requests:
        raise SpecError("a simulated closed-loop run needs --requests (conversations with --turns)")
    return None, sched.concurrency, None, build(spec, spec.requests)
