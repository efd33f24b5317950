"""A real OpenAI-compatible HTTP server (aiohttp, 127.0.0.1) that streams on a programmed schedule.

It exists so every metric can be tested against known timing: the first token arrives at
``ttft_ms + ttft_per_input_token_ms * input_tokens`` after the request, then one chunk every ``itl_ms``
(optionally jittered) carrying ``tokens_per_chunk`` tokens, each chunk sent at an absolute time so errors do
not accumulate. Tokens are whitespace-separated words (``/tokenize`` and ``/detokenize`` agree with the
counting). Faults on demand: HTTP 500/429, a malformed event, a dropped connection, a stall, an error event,
an event of valid JSON but the wrong shape (``shape``), a huge event written in small pieces (``huge``); every
``fault_every``-th request (or at ``fault_rate``). Wire quirks for every request: a leading BOM, CRLF or
CR-only line ends, gzip/deflate bodies (``compress``, optionally only when the request asks for it), error
texts that echo the request's ``Authorization`` header, ANSI/OSC escapes in the served model id.
``garbage`` makes it answer like a broken model (random words, empty or non-text answers) for the quality
checks. ``POST /_mock/config`` reprograms it while running. For multi-turn and prefix-cache tests: ``prefix_cache``
(a block-granular cache of earlier prompts: ``usage.prompt_tokens_details.cached_tokens``, and the per-token
TTFT part counts only the new tokens), ``tag_answers`` (request n's answer starts with `` a<n>``) and
``keep_prompts`` (``GET /_mock/prompts``: what each request sent), ``chat_template`` (llama-server's
``POST /apply-template``, rendering ChatML). For request-shaping tests: ``keep_requests`` (``GET /_mock/requests``:
each request's method, path, headers and JSON body, ``/_mock`` itself excepted) and ``echo_header`` (error texts
echo that request header's value, as ``echo_key`` does the API key).

With ``stamp`` on, each chunk carries ``pb_ns``: the server's ``perf_counter_ns`` just before the write
(the same CLOCK_MONOTONIC as the client's on one machine), so a benchmark can measure the client's own
timestamp error.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
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
    first_token_late_ms: float = 0.0  # the first chunk leaves this much after its schedule (and its metric stamp),
    # the later ones keep theirs: a starved HTTP frontend (vLLM's API process beside its engine core on 2 cores)
    natural_output_tokens: int | None = None  # stop here when the client does not force the length
    reasoning_tokens: int = 0  # chat: the first k tokens come as reasoning_content
    usage: str = "separate"  # "separate" (choices: []), "last" (on the finish chunk), "none"
    fault: str = "none"  # none | 500 | 429 | malformed | drop | stall | error_event | shape | huge
    fault_every: int = 0  # every Nth request (1-based count) gets the fault; 0 = never
    fault_rate: float = 0.0  # or this fraction, at random
    fault_after_chunks: int = 2  # for malformed/drop/stall/error_event/shape/huge: after how many chunks
    shape: str = "text_int"  # fault "shape": which wrong-shape event (a key of SHAPES)
    huge_event_mb: float = 6.0  # fault "huge": one text event of this many MiB ...
    huge_write_bytes: int = 4096  # ... written in pieces of this size
    echo_key: bool = False  # error bodies and error events repeat the request's Authorization header
    bom: bool = False  # a UTF-8 byte order mark before the first byte of every stream
    line_end: str = "lf"  # lf | crlf | cr: the line terminator of the event stream
    compress: str = "none"  # none | gzip | deflate | br: Content-Encoding of streams (br: the header only)
    compress_if_asked: bool = False  # compress only when the request's Accept-Encoding lists that coding
    hostile_model_id: bool = False  # serve the model id wrapped in ANSI/OSC escape sequences
    keepalive_comments: bool = False  # send ": ping" comments between events
    data_no_space: bool = False  # "data:{...}" instead of "data: {...}"
    split_events: bool = False  # write every event in two pieces
    timings: bool = False  # add a llama.cpp-style "timings" object to the last chunk
    stamp: bool = False
    seed: int = 0
    garbage: str = "none"  # a broken model's answers: none (" tk" tokens) | random (words) | empty | bytes
    # multi-turn and prefix-cache tests: a block-granular prefix cache (cached tokens reported in usage, TTFT's
    # per-token part counts only the new tokens), answers tagged with the request's number, received prompts kept
    prefix_cache: bool = False
    cache_block: int = 16
    tag_answers: bool = False  # the first token of request n's answer is " a<n>"
    keep_prompts: bool = False  # GET /_mock/prompts: the prompt (or messages) of each request, in arrival order
    chat_template: str = "none"  # "chatml": POST /apply-template renders messages as llama-server does (none: 404)
    keep_requests: bool = False  # GET /_mock/requests: method, path, headers and JSON body of each request
    echo_header: str = ""  # error texts echo this request header's value (a careless server; scrubbing tests)


TOKEN = " tk"  # every generated token is the same 3 characters
GARBAGE_WORDS = ("zorp", "quux", "blen", "vask", "drim", "oolt", "fesk", "trun", "wibe", "glom", "snet", "yarv")

# Events of valid JSON but the wrong shape (fault "shape"), sent in place of a chunk.
SHAPES: dict[str, dict[str, Any]] = {
    "text_int": {"choices": [{"text": 5}]},
    "content_int": {"choices": [{"index": 0, "delta": {"content": 5}, "finish_reason": None}]},
    "choices_str": {"choices": "abc"},
    "choice_list": {"choices": [[1, 2]]},
    "finish_int": {"choices": [{"index": 0, "text": " tk", "finish_reason": 3}]},
    "usage_list": {"choices": [], "usage": [1]},
    "tokens_str": {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": "7"}},
    "tokens_huge": {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 10**12}},
    "tokens_negative": {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": -4}},
    "tokens_bool": {"choices": [], "usage": {"prompt_tokens": True, "completion_tokens": 7}},
    "stamp_str": {"choices": [{"text": " tk"}], "pb_ns": "now"},
    "not_object": [1, 2, 3],  # type: ignore[dict-item]
}
# What hostile_model_id wraps the id in: an OSC window-title set, clear screen, colour, an 8-bit CSI.
HOSTILE_PREFIX = "\x1b]0;pwned\x07\x1b[2J\x1b[31m\x9b1m"
HOSTILE_SUFFIX = "\x1b[0m"
BOM = b"\xef\xbb\xbf"
LINE_ENDS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


class _Wire:
    """Writes one event stream: line ends, BOM and compression applied to every write."""

    def __init__(self, resp: web.StreamResponse, cfg: "MockConfig", coding: str | None) -> None:
        self.resp = resp
        self.nl = LINE_ENDS.get(cfg.line_end, b"\n")
        self.bom = cfg.bom
        self.z = None
        if coding == "gzip":
            self.z = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self.z = zlib.compressobj(wbits=zlib.MAX_WBITS)

    async def write(self, data: bytes) -> None:
        """``data`` uses LF line ends."""
        if self.nl != b"\n":
            data = data.replace(b"\n", self.nl)
        if self.bom:
            data, self.bom = BOM + data, False
        if self.z is not None:  # a sync flush per write: each event leaves at once, as a streaming proxy does
            data = self.z.compress(data) + self.z.flush(zlib.Z_SYNC_FLUSH)
        await self.resp.write(data)

    async def eof(self) -> None:
        if self.z is not None:
            await self.resp.write(self.z.flush())
        await self.resp.write_eof()


def _accepts(header: str, coding: str) -> bool:
    return any(part.split(";")[0].strip().lower() == coding for part in header.split(","))


class MockServer:
    def __init__(self, cfg: MockConfig | None = None) -> None:
        self.cfg = cfg or MockConfig()
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.rng = random.Random(self.cfg.seed)
        self.last_accept_encoding: str | None = None
        self._vocab: dict[str, int] = {}
        self._inv: list[str] = []
        self._blocks: set[int] = set()  # prefix cache: hashes of every cached prefix, one per whole block
        self.prompts: list[Any] = []
        self.requests: list[dict[str, Any]] = []

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
        app = web.Application(client_max_size=64 * 2**20, middlewares=[self.keep_request])
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/detokenize", self.detokenize)
        app.router.add_post("/apply-template", self.apply_template)
        app.router.add_get("/_mock/config", self.get_config)
        app.router.add_post("/_mock/config", self.set_config)
        app.router.add_get("/_mock/stats", self.stats)
        app.router.add_get("/_mock/prompts", self.get_prompts)
        app.router.add_get("/_mock/requests", self.get_requests)
        add_metrics_route(app, self)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    @property
    def served_id(self) -> str:
        c = self.cfg
        return HOSTILE_PREFIX + c.model + HOSTILE_SUFFIX if c.hostile_model_id else c.model

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.served_id, "object": "model"}]})

    def _error(self, request: web.Request, status: int, message: str) -> web.Response:
        if self.cfg.echo_key:
            message += f" (you sent Authorization: {request.headers.get('Authorization')})"
        if self.cfg.echo_header:
            message += f" (you sent {self.cfg.echo_header}: {request.headers.get(self.cfg.echo_header)})"
        return _error(status, message)

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = body.get("content", body.get("prompt", ""))
        return web.json_response({"tokens": self.encode(text)})

    async def detokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"content": " ".join(self._inv[i] for i in body.get("tokens", []))})

    async def apply_template(self, request: web.Request) -> web.Response:
        """llama-server's ``/apply-template``: ``{"messages": [...]}`` -> ``{"prompt": ...}`` (ChatML, with the
        generation prompt)."""
        if self.cfg.chat_template != "chatml":
            return _error(404, "File Not Found")
        body = await request.json()
        msgs = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(msgs, list):
            return _error(400, "'messages' is required")
        text = "".join(f"<|im_start|>{m.get('role')}\n{m.get('content')}<|im_end|>\n" for m in msgs if isinstance(m, dict))
        return web.json_response({"prompt": text + "<|im_start|>assistant\n"})

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
        self._blocks.clear()
        self.prompts.clear()
        self.requests.clear()
        self.rng = random.Random(self.cfg.seed)
        return web.json_response(asdict(self.cfg))

    async def get_prompts(self, request: web.Request) -> web.Response:
        return web.json_response(self.prompts)

    async def get_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    @web.middleware
    async def keep_request(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.cfg.keep_requests and not request.path.startswith("/_mock"):
            raw = await request.read()  # aiohttp keeps the bytes: the handler's request.json() reads them again
            try:
                body = orjson.loads(raw) if raw else None
            except ValueError:
                body = None
            self.requests.append({"method": request.method, "path": request.path, "headers": dict(request.headers),
                                  "body": body})
        return await handler(request)

    def cached_prefix(self, ids: list[int]) -> int:
        """Tokens of ``ids`` already cached (whole blocks, as vLLM/SGLang count them); then caches all of ``ids``."""
        b = max(1, self.cfg.cache_block)
        h, hit, missed = 0, 0, False
        for k in range(b, len(ids) + 1, b):
            h = hash((h, tuple(ids[k - b:k])))
            if not missed and h in self._blocks:
                hit = k
            else:
                missed = True
                self._blocks.add(h)
        return min(hit, max(len(ids) - 1, 0))  # the last token is always computed

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"count": self.count, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                                  "last_accept_encoding": self.last_accept_encoding})

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
            resp = await self._complete(request, t_req, n)
            await observe_metrics(self, request, resp)
            return resp
        except ConnectionResetError:
            # the client hung up mid-stream (as it should after a bad event): not the server's error, and
            # never logged (a test's pipe that nobody reads would fill up and stall the server)
            resp = request.get("pb_resp")
            return resp if resp is not None else web.Response(status=499)
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
        self.last_accept_encoding = request.headers.get("Accept-Encoding")
        if body.get("model") not in (None, self.served_id):
            return _error(404, f"The model `{body.get('model')}` does not exist.")
        chat = "messages" in body
        if chat:
            prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        else:
            prompt = body.get("prompt", "")
        ids = self.encode(prompt)
        n_in = len(ids)
        if c.keep_prompts:
            self.prompts.append(body["messages"] if chat else prompt)
        n_cached = self.cached_prefix(ids) if c.prefix_cache else None
        n_new = n_in - (n_cached or 0)
        max_tokens = int(body.get("max_tokens") or body.get("n_predict") or 16)
        forced = bool(body.get("ignore_eos")) or bool(body.get("min_tokens"))
        n_out = max_tokens if (forced or c.natural_output_tokens is None) else min(max_tokens, c.natural_output_tokens)
        fault = self._fault_for(n)
        if fault == "500":
            return self._error(request, 500, "injected internal error")
        if fault == "429":
            return self._error(request, 429, "injected rate limit")
        if not body.get("stream"):
            await _sleep_until(t_req + int((c.ttft_ms + c.ttft_per_input_token_ms * n_new) * 1e6))
            await asyncio.sleep(c.itl_ms * max(n_out - 1, 0) / c.tokens_per_chunk / 1000)
            return web.json_response(_final_object(chat, self.served_id, self.text(n_out), n_in, n_out, n_cached))
        coding = c.compress if c.compress != "none" else None
        if coding and c.compress_if_asked and not _accepts(request.headers.get("Accept-Encoding", ""), coding):
            coding = None
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                   "X-Request-Id": request.headers.get("X-Request-Id", "")}
        if coding:
            headers["Content-Encoding"] = coding
        resp = web.StreamResponse(headers=headers)
        request["pb_resp"] = resp
        await resp.prepare(request)
        wire = _Wire(resp, c, coding)
        sep = b"data:" if c.data_no_space else b"data: "

        async def send(obj: Any, raw: bytes | None = None) -> None:
            if c.stamp and isinstance(obj, dict):
                obj["pb_ns"] = now_ns()
            payload = raw if raw is not None else sep + orjson.dumps(obj) + b"\n\n"
            if c.keepalive_comments:
                payload = b": ping\n\n" + payload
            if c.split_events and len(payload) > 4:
                half = len(payload) // 2
                await wire.write(payload[:half])
                await asyncio.sleep(0)
                await wire.write(payload[half:])
            else:
                await wire.write(payload)

        base = {"id": f"cmpl-{n}", "object": "chat.completion.chunk" if chat else "text_completion",
                "model": self.served_id}
        if chat:
            await send({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        t_first = t_req + int((c.ttft_ms + c.ttft_per_input_token_ms * n_new) * 1e6)
        sent = 0
        k = 0
        itl_ns = int(c.itl_ms * 1e6)
        while sent < n_out:
            due = t_first + k * itl_ns + (int(c.first_token_late_ms * 1e6) if k == 0 else 0)
            if c.itl_jitter_ms and k:
                due += int(self.rng.uniform(-c.itl_jitter_ms, c.itl_jitter_ms) * 1e6)
            await _sleep_until(due)
            if fault in ("malformed", "drop", "stall", "error_event", "shape", "huge") and k == c.fault_after_chunks:
                if fault == "malformed":
                    await send(None, raw=sep + b'{"choices": [{"text": "oops"\n\n')
                    await asyncio.sleep(0.01)
                elif fault == "shape":
                    bad = SHAPES[c.shape]
                    await send({**base, **bad} if isinstance(bad, dict) else bad)
                    await asyncio.sleep(0.01)
                elif fault == "huge":
                    big = sep + orjson.dumps({**base, "choices": [{"index": 0, "text": "x" * int(c.huge_event_mb * 2**20),
                                                                   "finish_reason": None}]}) + b"\n\n"
                    step = max(1, c.huge_write_bytes)
                    for i in range(0, len(big), step):
                        await wire.write(big[i : i + step])
                elif fault == "error_event":
                    msg = "injected error event"
                    if c.echo_key:
                        msg += f" (you sent Authorization: {request.headers.get('Authorization')})"
                    await send({"error": {"message": msg, "type": "server_error"}})
                    await wire.write(b"data: [DONE]\n\n")
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
            if c.tag_answers and sent == 0:
                text = f" a{n}" + self.text(take - 1)
            last = sent + take >= n_out
            finish = ("length" if forced or n_out == max_tokens else "stop") if last else None
            if chat:
                delta = {"reasoning_content": text} if reasoning else {"content": text}
                obj = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            else:
                obj = {**base, "choices": [{"index": 0, "text": text, "finish_reason": finish}]}
            if last and c.usage == "last":
                obj["usage"] = _usage(n_in, n_out, n_cached)
            if last and c.timings:
                obj["timings"] = {"prompt_n": n_in, "prompt_ms": (t_first - t_req) / 1e6, "predicted_n": n_out,
                                  "predicted_ms": k * c.itl_ms}
            await send(obj)
            sent += take
            k += 1
        if c.usage == "separate":
            await send({**base, "choices": [], "usage": _usage(n_in, n_out, n_cached)})
        self._done(request)
        await wire.write(b"data: [DONE]\n\n")
        await wire.eof()
        return resp


def _usage(n_in: int, n_out: int, n_cached: int | None = None) -> dict[str, Any]:
    u: dict[str, Any] = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
    if n_cached is not None:
        u["prompt_tokens_details"] = {"cached_tokens": n_cached}
    return u


def _final_object(chat: bool, model: str, text: str, n_in: int, n_out: int, n_cached: int | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {"id": "cmpl", "model": model, "choices": [choice], "usage": _usage(n_in, n_out, n_cached)}


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


# ---- /metrics: vLLM-style Prometheus histograms that agree with the programmed schedule ---------------


class MockMetrics:
    """What a vLLM would report for the mock's own schedule: TTFT = prefill = ttft_ms + per-token · input
    (no queue: every request is served at once), one inter-token gap of itl_ms / tokens_per_chunk per
    token after the first, decode = the chunk gaps, e2e = TTFT + decode. A prefix cache of 16-word blocks
    (like vLLM's block hashes) counts a prompt's leading blocks already seen as hits."""

    BLOCK = 16

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        b = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
        lab = ["model_name"]
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT", lab, registry=r, buckets=b)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "ITL", lab, registry=r, buckets=b)
        self.tpot = Histogram("vllm:request_time_per_output_token_seconds", "TPOT", lab, registry=r, buckets=b)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "E2E", lab, registry=r, buckets=b)
        self.queue = Histogram("vllm:request_queue_time_seconds", "queue", lab, registry=r, buckets=b)
        self.prefill = Histogram("vllm:request_prefill_time_seconds", "prefill", lab, registry=r, buckets=b)
        self.decode = Histogram("vllm:request_decode_time_seconds", "decode", lab, registry=r, buckets=b)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "prompt tokens", lab, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "generated tokens", lab, registry=r)
        self.hits = Counter("vllm:prefix_cache_hits", "cached prompt tokens", lab, registry=r)
        self.queries = Counter("vllm:prefix_cache_queries", "prompt tokens looked up", lab, registry=r)
        self.preemptions = Counter("vllm:num_preemptions", "preemptions", lab, registry=r)
        self.running = Gauge("vllm:num_requests_running", "running", lab, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "waiting", lab, registry=r)
        self.kv = Gauge("vllm:kv_cache_usage_perc", "KV usage", lab, registry=r)
        self.blocks: set[int] = set()


def _mock_metrics(server: MockServer) -> MockMetrics:
    m = getattr(server, "_metrics", None)
    if m is None:
        m = server._metrics = MockMetrics()  # type: ignore[attr-defined]
    return m


def add_metrics_route(app: web.Application, server: MockServer) -> None:
    async def metrics(request: web.Request) -> web.Response:
        from prometheus_client import generate_latest

        m = _mock_metrics(server)
        model = server.cfg.model
        m.running.labels(model).set(server.in_flight)
        m.waiting.labels(model).set(0)
        m.kv.labels(model).set(min(1.0, server.in_flight / 64))
        return web.Response(body=generate_latest(m.registry), content_type="text/plain")

    app.router.add_get("/metrics", metrics)


async def observe_metrics(server: MockServer, request: web.Request, resp: web.StreamResponse) -> None:
    """Record one finished streamed request in the histograms, from the programmed schedule."""
    if resp.status != 200 or not isinstance(resp, web.StreamResponse) or isinstance(resp, web.Response):
        return
    c = server.cfg
    try:
        body = await request.json()
    except ValueError:
        return
    chat = "messages" in body
    prompt = "\n".join(str(x.get("content", "")) for x in body["messages"]) if chat else body.get("prompt", "")
    words = prompt.split()
    n_in = len(words)
    max_tokens = int(body.get("max_tokens") or body.get("n_predict") or 16)
    forced = bool(body.get("ignore_eos")) or bool(body.get("min_tokens"))
    n_out = max_tokens if (forced or c.natural_output_tokens is None) else min(max_tokens, c.natural_output_tokens)
    ttft = (c.ttft_ms + c.ttft_per_input_token_ms * n_in) / 1000
    chunks = -(-n_out // max(1, c.tokens_per_chunk))
    decode = max(chunks - 1, 0) * c.itl_ms / 1000
    m = _mock_metrics(server)
    lab = c.model
    m.ttft.labels(lab).observe(ttft)
    m.queue.labels(lab).observe(0.0)
    m.prefill.labels(lab).observe(ttft)
    m.decode.labels(lab).observe(decode)
    m.e2e.labels(lab).observe(ttft + decode)
    if n_out > 1:
        m.tpot.labels(lab).observe(decode / (n_out - 1))
        per_token = c.itl_ms / max(1, c.tokens_per_chunk) / 1000
        for _ in range(n_out - 1):
            m.itl.labels(lab).observe(per_token)
    m.prompt_tokens.labels(lab).inc(n_in)
    m.generation_tokens.labels(lab).inc(n_out)
    h, hits, leading = 0, 0, True
    for i in range(0, n_in - n_in % MockMetrics.BLOCK, MockMetrics.BLOCK):
        h = hash((h, tuple(words[i:i + MockMetrics.BLOCK])))
        if leading and h in m.blocks:
            hits += MockMetrics.BLOCK
        else:
            leading = False
        m.blocks.add(h)
    m.queries.labels(lab).inc(n_in)
    m.hits.labels(lab).inc(hits)


if __name__ == "__main__":
    main()
