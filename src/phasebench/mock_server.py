"""A real OpenAI-compatible HTTP server (aiohttp, 127.0.0.1) that streams on a programmed schedule.

It exists so every metric can be tested against known timing: the first token arrives at
``ttft_ms + ttft_per_input_token_ms * input_tokens`` after the request, then one chunk every ``itl_ms``
(optionally jittered) carrying ``tokens_per_chunk`` tokens, each chunk sent at an absolute time so errors do
not accumulate. Tokens are whitespace-separated words (``/tokenize`` and ``/detokenize`` agree with the
counting). Faults on demand: HTTP 500/429, a malformed event, a dropped connection, a stall; every
``fault_every``-th request (or at ``fault_rate``). ``garbage`` makes it answer like a broken model (random words,
empty or non-text answers) for the quality checks. ``POST /_mock/config`` reprograms it while running.

With ``stamp`` on, each chunk carries ``pb_ns``: the server's ``perf_counter_ns`` just before the write
(the same CLOCK_MONOTONIC as the client's on one machine), so a benchmark can measure the client's own
timestamp error.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import orjson
from aiohttp import web

now_ns = time.perf_counter_ns


@dataclass
class MockConfig:
    model: str = "mock-model"
    ttft_ms: float = 20.0
    ttft_per_input_token_ms: float = 0.0
    itl_ms: float = 10.0
    itl_jitter_ms: float = 0.0
    tokens_per_chunk: int = 1
    natural_output_tokens: int | None = None  # stop here when the client does not force the length
    reasoning_tokens: int = 0  # chat: the first k tokens come as reasoning_content
    usage: str = "separate"  # "separate" (choices: []), "last" (on the finish chunk), "none"
    fault: str = "none"  # none | 500 | 429 | malformed | drop | stall | error_event
    fault_every: int = 0  # every Nth request (1-based count) gets the fault; 0 = never
    fault_rate: float = 0.0  # or this fraction, at random
    fault_after_chunks: int = 2  # for malformed/drop/stall: after how many chunks
    keepalive_comments: bool = False  # send ": ping" comments between events
    data_no_space: bool = False  # "data:{...}" instead of "data: {...}"
    split_events: bool = False  # write every event in two pieces
    timings: bool = False  # add a llama.cpp-style "timings" object to the last chunk
    stamp: bool = False
    seed: int = 0
    garbage: str = "none"  # a broken model's answers: none (" tk" tokens) | random (words) | empty | bytes


TOKEN = " tk"  # every generated token is the same 3 characters
GARBAGE_WORDS = ("zorp", "quux", "blen", "vask", "drim", "oolt", "fesk", "trun", "wibe", "glom", "snet", "yarv")


class MockServer:
    def __init__(self, cfg: MockConfig | None = None) -> None:
        self.cfg = cfg or MockConfig()
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.rng = random.Random(self.cfg.seed)
        self._vocab: dict[str, int] = {}
        self._inv: list[str] = []

    # ---- tokenization: whitespace words ----
    def encode(self, text: str) -> list[int]:
        ids = []
        for w in text.split():
            i = self._vocab.get(w)
            if i is None:
                i = self._vocab[w] = len(self._inv)
                self._inv.append(w)
            ids.append(i)
        return ids

    def text(self, n: int) -> str:
        """``n`` generated tokens' text; with ``garbage`` set, what a broken server sends instead."""
        g = self.cfg.garbage
        if g == "random":
            return "".join(" " + self.rng.choice(GARBAGE_WORDS) for _ in range(n))
        return {"empty": "", "bytes": "\x00\ufffd\x07" * n}.get(g, TOKEN * n)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/detokenize", self.detokenize)
        app.router.add_get("/_mock/config", self.get_config)
        app.router.add_post("/_mock/config", self.set_config)
        app.router.add_get("/_mock/stats", self.stats)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.cfg.model, "object": "model"}]})

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = body.get("content", body.get("prompt", ""))
        return web.json_response({"tokens": self.encode(text)})

    async def detokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"content": " ".join(self._inv[i] for i in body.get("tokens", []))})

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.cfg))

    async def set_config(self, request: web.Request) -> web.Response:
        body = await request.json()
        reset = body.pop("reset", False)
        names = {f.name for f in fields(MockConfig)}
        bad = [k for k in body if k not in names]
        if bad:
            return web.json_response({"error": {"message": f"unknown config keys: {bad}"}}, status=400)
        if reset:
            self.cfg = MockConfig()
        for k, v in body.items():
            setattr(self.cfg, k, v)
        self.count = 0
        self.max_in_flight = 0
        self.rng = random.Random(self.cfg.seed)
        return web.json_response(asdict(self.cfg))

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"count": self.count, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight})

    def _fault_for(self, n: int) -> str:
        c = self.cfg
        if c.fault == "none":
            return "none"
        if c.fault_every and n % c.fault_every == 0:
            return c.fault
        if c.fault_rate and self.rng.random() < c.fault_rate:
            return c.fault
        return "none"

    async def completions(self, request: web.Request) -> web.StreamResponse:
        t_req = now_ns()
        self.count += 1
        n = self.count
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        request["pb_counted"] = True
        try:
            return await self._complete(request, t_req, n)
        finally:
            self._done(request)

    def _done(self, request: web.Request) -> None:
        """Stop counting a request as in flight; called before its last byte is written, so a client that
        reacts to the end cannot make the count overlap."""
        if request.get("pb_counted"):
            request["pb_counted"] = False
            self.in_flight -= 1

    async def _complete(self, request: web.Request, t_req: int, n: int) -> web.StreamResponse:
        c = self.cfg
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not JSON")
        if body.get("model") not in (None, c.model):
            return _error(404, f"The model `{body.get('model')}` does not exist.")
        chat = "messages" in body
        if chat:
            prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        else:
            prompt = body.get("prompt", "")
        n_in = len(self.encode(prompt))
        max_tokens = int(body.get("max_tokens") or body.get("n_predict") or 16)
        forced = bool(body.get("ignore_eos")) or bool(body.get("min_tokens"))
        n_out = max_tokens if (forced or c.natural_output_tokens is None) else min(max_tokens, c.natural_output_tokens)
        fault = self._fault_for(n)
        if fault == "500":
            return _error(500, "injected internal error")
        if fault == "429":
            return _error(429, "injected rate limit")
        if not body.get("stream"):
            await _sleep_until(t_req + int((c.ttft_ms + c.ttft_per_input_token_ms * n_in) * 1e6))
            await asyncio.sleep(c.itl_ms * max(n_out - 1, 0) / c.tokens_per_chunk / 1000)
            return web.json_response(_final_object(chat, c.model, self.text(n_out), n_in, n_out))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Request-Id": request.headers.get("X-Request-Id", "")})
        await resp.prepare(request)
        sep = b"data:" if c.data_no_space else b"data: "

        async def send(obj: Any, raw: bytes | None = None) -> None:
            if c.stamp and isinstance(obj, dict):
                obj["pb_ns"] = now_ns()
            payload = raw if raw is not None else sep + orjson.dumps(obj) + b"\n\n"
            if c.keepalive_comments:
                payload = b": ping\n\n" + payload
            if c.split_events and len(payload) > 4:
                half = len(payload) // 2
                await resp.write(payload[:half])
                await asyncio.sleep(0)
                await resp.write(payload[half:])
            else:
                await resp.write(payload)

        base = {"id": f"cmpl-{n}", "object": "chat.completion.chunk" if chat else "text_completion", "model": c.model}
        if chat:
            await send({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        t_first = t_req + int((c.ttft_ms + c.ttft_per_input_token_ms * n_in) * 1e6)
        sent = 0
        k = 0
        itl_ns = int(c.itl_ms * 1e6)
        while sent < n_out:
            due = t_first + k * itl_ns
            if c.itl_jitter_ms and k:
                due += int(self.rng.uniform(-c.itl_jitter_ms, c.itl_jitter_ms) * 1e6)
            await _sleep_until(due)
            if fault in ("malformed", "drop", "stall", "error_event") and k == c.fault_after_chunks:
                if fault == "malformed":
                    await send(None, raw=sep + b'{"choices": [{"text": "oops"\n\n')
                    await asyncio.sleep(0.01)
                elif fault == "error_event":
                    await send({"error": {"message": "injected error event", "type": "server_error"}})
                    await resp.write(b"data: [DONE]\n\n")
                    return resp
                elif fault == "drop":
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                else:  # stall: send nothing more until the client gives up and closes the connection
                    end = time.monotonic() + 3600
                    while time.monotonic() < end and request.transport is not None and not request.transport.is_closing():
                        await asyncio.sleep(0.05)
                    return resp
            take = min(c.tokens_per_chunk, n_out - sent)
            reasoning = chat and sent < c.reasoning_tokens
            text = self.text(take)
            last = sent + take >= n_out
            finish = ("length" if forced or n_out == max_tokens else "stop") if last else None
            if chat:
                delta = {"reasoning_content": text} if reasoning else {"content": text}
                obj = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            else:
                obj = {**base, "choices": [{"index": 0, "text": text, "finish_reason": finish}]}
            if last and c.usage == "last":
                obj["usage"] = _usage(n_in, n_out)
            if last and c.timings:
                obj["timings"] = {"prompt_n": n_in, "prompt_ms": (t_first - t_req) / 1e6, "predicted_n": n_out,
                                  "predicted_ms": k * c.itl_ms}
            await send(obj)
            sent += take
            k += 1
        if c.usage == "separate":
            await send({**base, "choices": [], "usage": _usage(n_in, n_out)})
        self._done(request)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _usage(n_in: int, n_out: int) -> dict[str, int]:
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}


def _final_object(chat: bool, model: str, text: str, n_in: int, n_out: int) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {"id": "cmpl", "model": model, "choices": [choice], "usage": _usage(n_in, n_out)}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "mock_error", "code": status}}, status=status)


async def _sleep_until(t_ns: int) -> None:
    delay = (t_ns - now_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


async def serve(cfg: MockConfig, host: str = "127.0.0.1", port: int = 0, ready: Any = None) -> None:
    """Serve until cancelled; prints ``listening on http://host:port`` once bound (port 0 = any free)."""
    server = MockServer(cfg)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    await site.start()
    sock = site._server.sockets[0]  # type: ignore[union-attr]
    bound = sock.getsockname()[1]
    print(f"listening on http://{host}:{bound}", flush=True)
    if ready is not None:
        ready(bound)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m phasebench.mock_server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    for f in fields(MockConfig):
        typ = {"float": float, "int": int, "str": str, "bool": _bool}.get(str(f.type).split(" ")[0], str)
        if "None" in str(f.type):
            typ = int
        p.add_argument("--" + f.name.replace("_", "-"), type=typ, default=f.default)
    a = p.parse_args(argv)
    cfg = MockConfig(**{f.name: getattr(a, f.name) for f in fields(MockConfig)})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(cfg, a.host, a.port))
    except KeyboardInterrupt:
        pass


def _bool(s: str) -> bool:
    return s.lower() in ("1", "true", "yes", "on")


if __name__ == "__main__":
    main()
