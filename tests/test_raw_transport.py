"""The raw HTTP/1.1 transport: kernel receive timestamps on plain http:// (Linux), the same records as the
aiohttp transport, keep-alive pooling, and the choice between them. Real mock-server process over loopback."""

from __future__ import annotations

import asyncio
import sys

import pytest

import phasebench
from phasebench.client.openai import Prompt
from phasebench.client.raw import RawClient, choose_transport
from phasebench.client.transport import ClientConfig

from .conftest import spec

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernel receive timestamps are Linux's")


@linux
def test_chunks_carry_kernel_stamps_between_send_and_read(server, tmp_path):
    server.configure(ttft_ms=10, itl_ms=5, stamp=True)
    r = phasebench.run(spec(server, tmp_path, requests=6, output_tokens=12, concurrency=[2]))
    assert r.manifest["transport"]["name"] == "raw"
    for rec in r.records:
        assert rec.ok and len(rec.chunk_ns) == 12 and rec.server_stamps
        # causality on one clock: each chunk arrives after the server sent it; the read comes after arrival
        assert all(s <= c for s, c in zip(rec.server_stamps, rec.chunk_ns))
        assert rec.read_delay_ns and min(rec.read_delay_ns) >= 0
    c = r.summary["phasebench"]["client"]
    assert c["transport"] == "raw" and c["read_delay_ms"]["count"] > 0
    assert c["ttft_uncertainty_ms"]["count"] == 6


@linux
def test_a_last_token_read_with_the_end_of_its_stream_is_exact(server, tmp_path):
    """One-token answers: the token, its finish event and [DONE] arrive in one segment, so the token carries that
    segment's own kernel stamp; sharing a read with the stream's end is not reading late (it made every mock
    prefill step INVALID: "TTFT may be up to 20.8 ms late" on a quiet machine)."""
    server.configure(ttft_ms=20, itl_ms=5)
    r = phasebench.run(spec(server, tmp_path, requests=4, output_tokens=1, concurrency=[1]))
    assert r.manifest["transport"]["name"] == "raw"
    assert all(rec.ok and len(rec.chunk_ns) == 1 for rec in r.records)
    assert all(rec.ttft_uncertainty_ns == 0 and rec.coalesced_reads == 0 for rec in r.records if not rec.warmup)
    assert not any("read late" in x for x in r.summary["phasebench"]["reasons"])


def test_same_records_either_way(server, tmp_path):
    server.configure(ttft_ms=10, itl_ms=3, tokens_per_chunk=2)
    a = phasebench.run(spec(server, tmp_path / "a", requests=3, output_tokens=10, transport="aiohttp"))
    b = phasebench.run(spec(server, tmp_path / "b", requests=3, output_tokens=10, transport="auto"))
    assert a.manifest["transport"]["name"] == "aiohttp"
    for x, y in zip(a.records, b.records):
        assert (x.output_tokens, x.chunk_tokens, x.prompt_tokens, x.finish_reason, x.length_met) == \
               (y.output_tokens, y.chunk_tokens, y.prompt_tokens, y.finish_reason, y.length_met)


def test_keep_alive_connections_are_reused(server):
    server.configure(ttft_ms=2, itl_ms=1)

    async def go() -> int:
        cfg = ClientConfig(base_url=server.url, model="mock-model", transport="raw", max_connections=4)
        async with RawClient(cfg) as c:
            for i in range(8):
                p = Prompt(text="hello there", output_tokens=3)
                rec = await c.send(c.new_record(i, 0, p), p)
                assert rec.ok, rec.error
            return c._pool.opened

    assert asyncio.run(go()) == 1


def test_errors_are_per_request_on_the_raw_path(server, tmp_path):
    server.configure(fault="500", fault_every=2, itl_ms=1)
    r = phasebench.run(spec(server, tmp_path, requests=4, scenario="single-stream"))
    errs = [x for x in r.records if x.error]
    assert len(errs) == 2 and {x.error_type for x in errs} == {"http_5xx"} and "injected internal error" in errs[0].error


def test_transport_choice():
    assert choose_transport("auto", "https://api.example/v1") == "aiohttp"
    assert choose_transport("aiohttp", "http://127.0.0.1:8000/v1") == "aiohttp"
    if sys.platform.startswith("linux"):
        assert choose_transport("auto", "http://127.0.0.1:8000/v1") == "raw"
    with pytest.raises(ValueError, match="plain http"):
        choose_transport("raw", "https://api.example/v1")
