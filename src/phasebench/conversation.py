"""Multi-turn conversations: each turn re-sends the conversation's history with the server's real answers.

A conversation is a list of user messages (synthetic, of ``--input-tokens`` each, or a dataset's real turns) and
an output length per turn. Turn k's request is the history — the system prompt if any, every earlier user turn
and the answer the server really gave to it, as it came back — plus user message k; the chat endpoint gets it as
``messages``, the completions endpoint as one text made by the model's chat template (the server's, a local
tokenizer folder's, or plain role labels: :mod:`phasebench.workload.templates`; each turn's text extends the
previous turn's text and its answer, so a prefix cache can serve it). After an answer the user "thinks"
``--think-time`` seconds before the next turn (the next turn's text is rendered meanwhile).

Closed loop (``--concurrency C``): C users, each holding its slot for the whole of a conversation, then taking
the next one. Open loop (``--scenario server --rate R``): conversations *start* by the schedule's gamma/Poisson
process; their later turns follow their own answers. ``--requests`` counts conversations.

``run_conversations`` keeps ``dispatch.execute``'s contract: every record is written as it ends, the server's
health (``Health``) backs closed-loop users off after failures to connect and stops a run whose server has gone,
and a signal (the ``Stopper``) cancels what is in flight, recorded as cancelled.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from .client.openai import Prompt
from .client.transport import Client
from .dispatch import Dispatcher, Progress, sleep_until
from .records import RecordWriter, RequestRecord
from .schedule import Schedule
from .spec import Endpoint, RunSpec, SpecError, TimeDist
from .workload.files import load_dataset
from .workload.synthetic import exact_prompt, prompt_head, sample_lengths
from .workload.templates import ChatTemplate, TemplateError, choose_template, flatten
from .workload.tokens import Tokenizer, server_root

now_ns = time.perf_counter_ns


@dataclass
class Conversation:
    id: int
    user_turns: list[str]
    output_tokens: list[int]
    user_tokens: list[int | None] = field(default_factory=list)  # each new user message's tokens (None: unknown)
    system: str | None = None
    first_text: str | None = None  # completions: turn 0 rendered by the chat template before the run

    def first_history(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, {"role": "user", "content": self.user_turns[0]}]

    def first_prompt(self) -> Prompt:
        """Turn 0 alone (what the runner uses to size its connections and warm-up)."""
        return Prompt(text=self.user_turns[0], input_tokens=self.user_tokens[0] if self.user_tokens else None,
                      output_tokens=self.output_tokens[0], conversation=self.id, turn=0)


def turn_prompt(conv: Conversation, k: int, history: list[dict[str, str]], endpoint: Endpoint,
                known_tokens: int | None, text: str | None = None) -> Prompt:
    """Turn ``k``'s request: ``history`` already holds the system prompt, the earlier turns and their answers, and
    user message k. Completions: ``text``, the history rendered by the chat template (default: role labels,
    :func:`~phasebench.workload.templates.flatten`), ending where the answer goes."""
    if endpoint == Endpoint.chat:
        return Prompt(messages=[dict(m) for m in history], input_tokens=known_tokens,
                      output_tokens=conv.output_tokens[k], conversation=conv.id, turn=k)
    return Prompt(text=flatten(history) if text is None else text, input_tokens=known_tokens,
                  output_tokens=conv.output_tokens[k], conversation=conv.id, turn=k)


# ---- building conversations ------------------------------------------------------------------------------


async def completions_template(spec: RunSpec, session: aiohttp.ClientSession, base_url: str,
                               key: str | None) -> ChatTemplate | None:
    """Completions-endpoint conversations: the chat template their history is flattened with (None: chat)."""
    if spec.endpoint != Endpoint.completions:
        return None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await choose_template(spec.tokenizer, session, server_root(base_url), headers)


async def build_conversations(spec: RunSpec, tok: Tokenizer, n: int, template: ChatTemplate | None = None,
                              session: aiohttp.ClientSession | None = None) -> list[Conversation]:
    """``n`` conversations: the dataset's own (turn by turn, at most ``--turns`` each, reused in order to reach
    ``n``) or synthetic ones with ``--turns`` turns of ``--input-tokens`` new user tokens each. With a chat
    ``template`` (completions), each conversation's first turn is rendered now, before any traffic."""
    convs = await _conversations(spec, tok, n)
    if template is not None:
        assert session is not None
        for c in convs:
            try:
                c.first_text = await template.render(c.first_history(), session)
            except TemplateError as e:
                raise SpecError(f"the chat template ({template.source}) cannot render the first turn: {e}") from None
    return convs


async def _conversations(spec: RunSpec, tok: Tokenizer, n: int) -> list[Conversation]:
    assert spec.turns is not None
    if spec.dataset is not None:
        convs = await dataset_conversations(spec, tok, spec.turns.mean)
        return [Conversation(k, c.user_turns, c.output_tokens, c.user_tokens, c.system)
                for k, c in zip(range(n), itertools.cycle(convs))]
    rng = np.random.default_rng([spec.seed, 7919])
    counts = sample_lengths(spec.turns, n, rng)
    out: list[Conversation] = []
    for k, t in enumerate(counts):
        ins = sample_lengths(spec.input_tokens, t, rng)
        outs = sample_lengths(spec.output_tokens, t, rng)
        texts, got = [], []
        for j, n_in in enumerate(ins):  # the run's nonce starts each conversation: no hits from an earlier run
            head = prompt_head(spec.nonce or "", f"{spec.seed}/conv{k}") if j == 0 else ""
            text, m = await exact_prompt(tok, rng, n_in, head)
            texts.append(text)
            got.append(m if tok.exact else n_in)
        out.append(Conversation(k, texts, outs, got))
    return out


def _turns_of(row: dict[str, Any]) -> tuple[str | None, list[tuple[str, str | None]]]:
    """(system prompt, [(user message, recorded answer or None)]) of a ShareGPT or OpenAI-messages row."""
    if "conversations" in row:
        msgs = [{"role": {"human": "user", "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant"}
                 .get(str(c.get("from")), str(c.get("from"))), "content": c.get("value")}
                for c in row["conversations"] or [] if isinstance(c, dict)]
    else:
        msgs = [m for m in row.get("messages") or [] if isinstance(m, dict)]
    system = None
    turns: list[tuple[str, str | None]] = []
    for m in msgs:
        role, content = m.get("role"), m.get("content")
        if not isinstance(content, str):
            continue
        if role == "system" and not turns:
            system = content if system is None else system + "\n" + content
        elif role == "user":
            turns.append((content, None))
        elif role == "assistant" and turns and turns[-1][1] is None:
            turns[-1] = (turns[-1][0], content)
    return system, turns


async def dataset_conversations(spec: RunSpec, tok: Tokenizer, max_turns: int) -> list[Conversation]:
    assert spec.dataset is not None
    load_dataset(spec.dataset)  # every way the file can be bad, as one line naming file and row
    rows = _raw_rows(spec.dataset)
    convs: list[Conversation] = []
    default_out = spec.output_tokens.mean
    for row in rows:
        system, turns = _turns_of(row)
        turns = turns[:max_turns]
        if not turns:
            continue
        users, outs, lens = [], [], []
        for user, reply in turns:
            users.append(user)
            lens.append(len(await tok.encode(user)) if tok.exact else None)
            outs.append(max(1, len(await tok.encode(reply))) if reply and tok.exact else default_out)
        convs.append(Conversation(len(convs), users, outs, lens, system))
    if not convs:
        raise SpecError(f"dataset {spec.dataset} has no conversation with a user turn "
                        "(ShareGPT 'conversations' or OpenAI 'messages')")
    return convs


def _raw_rows(path: Any) -> list[dict[str, Any]]:
    """The file's rows as JSON objects (the typed reader keeps only each row's first turn)."""
    from pathlib import Path

    import orjson

    raw = Path(path).read_bytes()
    if raw.lstrip()[:1] == b"[":
        data = orjson.loads(raw)
    else:
        data = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    return [r for r in data if isinstance(r, dict)]


def _seconds(dist: TimeDist, rng: np.random.Generator) -> float:
    if dist.stddev <= 0:
        return dist.mean
    return max(0.0, float(rng.normal(dist.mean, dist.stddev)))


# ---- sending them ----------------------------------------------------------------------------------------


async def run_conversations(
    client: Client,
    schedule: Schedule,
    conversations: list[Conversation],
    spec: RunSpec,
    writer: RecordWriter,
    progress: Progress,
    t0: int,
    template: ChatTemplate | None = None,
) -> tuple[list[RequestRecord], bool, str | None]:
    """Every conversation turn by turn; returns (records, interrupted, gone) as ``dispatch.execute`` does.

    A turn that fails ends its conversation (the next turn would need its answer); so does a turn the chat
    ``template`` cannot render (noted in ``template.failures``)."""
    if template is None:
        return await _run(client, schedule, conversations, spec, writer, progress, t0, None, None)
    async with aiohttp.ClientSession() as session:  # the server's /apply-template, between turns
        return await _run(client, schedule, conversations, spec, writer, progress, t0, template, session)


async def _run(client: Client, schedule: Schedule, conversations: list[Conversation], spec: RunSpec,
               writer: RecordWriter, progress: Progress, t0: int, template: ChatTemplate | None,
               session: aiohttp.ClientSession | None) -> tuple[list[RequestRecord], bool, str | None]:
    d = Dispatcher(client, schedule, writer, progress, t0)
    index = itertools.count()
    rng = np.random.default_rng([spec.seed, 104729])
    if client.texts is not None:
        client.texts.clear()  # the warm-up's answers

    async def one(prompt: Prompt, scheduled_rel: int) -> RequestRecord:
        return await d.send(client.new_record(next(index), scheduled_rel, prompt), prompt)

    async def render(history: list[dict[str, str]]) -> str | None:
        assert template is not None and session is not None
        try:
            return await template.render(history, session)
        except TemplateError as e:
            template.failures.append(str(e))
            return None

    async def converse(conv: Conversation, start_ns: int) -> None:
        history: list[dict[str, str]] = [{"role": "system", "content": conv.system}] if conv.system else []
        known: int | None = 0
        due = start_ns
        text = conv.first_text
        for k, user in enumerate(conv.user_turns):
            history.append({"role": "user", "content": user})
            if k:
                due = now_ns() + int(_seconds(spec.think_time, rng) * 1e9)
                if template is not None:  # rendered while the user thinks
                    text = await render(history)
                    if text is None:
                        return
                await sleep_until(due)
                if d.over():
                    return
            elif template is not None and text is None:
                text = await render(history)
                if text is None:
                    return
            new = conv.user_tokens[k] if k < len(conv.user_tokens) else None
            known = None if known is None or new is None else known + new
            rec = await one(turn_prompt(conv, k, history, spec.endpoint, known, text), due - t0)
            if not rec.ok:
                return
            answer = client.take_text(rec)
            history.append({"role": "assistant", "content": answer})
            if known is not None:
                known = None if rec.output_tokens is None else known + rec.output_tokens

    async def open_loop() -> None:
        assert schedule.offsets_ns is not None
        for k, off in enumerate(schedule.offsets_ns.tolist()):
            if k >= len(conversations):
                break
            await sleep_until(t0 + off)
            if d.stop.is_set():
                break
            d.spawn(converse(conversations[k], t0 + off))
        await d.drain()

    async def closed_loop() -> None:
        n = len(conversations) if schedule.count is not None else None
        counter = itertools.count() if n is None else iter(range(n))

        async def user() -> None:
            for k in counter:
                if d.over():
                    return
                await converse(conversations[k % len(conversations)], now_ns())
                await d.back_off()

        await d.slots(schedule.concurrency or 1, user)

    return await d.run(open_loop if schedule.kind == "open" else closed_loop)
