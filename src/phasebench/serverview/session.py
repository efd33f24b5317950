"""The scraper around one run: ``open_scraper`` before the measured window (``runner.run_one``),
``server_view`` after it (the analysis step of that name, ``analysis.py``). A metrics endpoint that is missing
or broken never stops a run: the server view then says why it is empty.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Sequence

from ..records import RequestRecord
from ..spec import RunSpec
from .scrape import Scraper
from .view import build_view, engine_of, prompt_cache_from_counters, series_row

SERIES_FILE = "server_metrics.jsonl"


def metrics_url(spec: RunSpec, base_url: str) -> str | None:
    from ..workload.tokens import server_root

    if spec.metrics_url in ("off", "none", ""):
        return None
    return spec.metrics_url or server_root(base_url) + "/metrics"


def _without_credentials(url: str) -> tuple[str, str | None]:
    """The URL without ``user:password@``, and those credentials as a Basic Authorization header."""
    import base64

    from ..spec import parse_url

    try:
        u = parse_url(url)
    except ValueError:
        return url, None
    if u.user is None and u.password is None:
        return url, None
    token = base64.b64encode(f"{u.user or ''}:{u.password or ''}".encode()).decode()
    return str(u.with_user(None)), f"Basic {token}"


async def open_scraper(spec: RunSpec, base_url: str, run_dir: Path | None, api_key: str | None) -> Scraper | None:
    """The 'before' scrape (in a thread: a slow endpoint must not hold the loop). None when scraping is off."""
    url = metrics_url(spec, base_url)
    if url is None:
        return None
    headers = {**spec.headers, **({"Authorization": f"Bearer {api_key}"} if api_key else {})}  # --header too
    url, basic = _without_credentials(url)  # user:password@ goes into a header, never into a stored message
    if basic and not api_key:
        headers["Authorization"] = basic
    scraper = Scraper(url, run_dir / SERIES_FILE if run_dir else None, headers=headers)
    if await asyncio.to_thread(scraper.begin):
        assert scraper.before is not None
        scraper.engine = engine_of(scraper.before)
        scraper.row = series_row(scraper.engine)
    return scraper


def server_view(scraper: Scraper | None, spec: RunSpec, records: Sequence[RequestRecord],
                summary: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The ``server_view`` block and its warnings, once the run is over (the 'after' scrape is taken here if
    ``runner.run_one`` could not take it). None when scraping was off."""
    if scraper is None:
        return None, []
    if scraper.before is None:
        return {"available": False, "source": scraper.source, "reason": scraper.error}, []
    scraper.finish()  # already done in run_one's finally; a second call does nothing
    if scraper.after is None:
        return {"available": False, "source": scraper.source, "reason": scraper.error}, []
    ok = [r for r in records if r.ok and not r.warmup]
    cached = [getattr(r, "cached_tokens", None) for r in ok]
    cached_known = [c for c in cached if c is not None]
    prompt = sum(r.prompt_tokens or 0 for r in ok)
    ttft = (summary.get("phasebench", {}).get("metrics", {}).get("ttft_ms") or {}).get("mean")
    view = build_view(scraper, scraper.engine, ttft, len(ok),
                      sum(cached_known) if cached_known else None, prompt or None,
                      deliberate_prefix=bool(spec.prefix_tokens) or spec.turns is not None or spec.trace is not None)
    if scraper.series_path is not None and scraper.series:
        view.series_file = scraper.series_path.name
    workload = summary.get("phasebench", {}).get("workload")
    if isinstance(workload, dict) and workload.get("prompt_cache") is None:  # no per-request cached tokens
        workload["prompt_cache"] = prompt_cache_from_counters(view, len(ok))
    return {"available": True, **view.to_dict()}, list(view.warnings)
