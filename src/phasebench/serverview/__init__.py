"""The engine's own view of a run: its Prometheus ``/metrics`` scraped before, during and after, differenced
over the run and set beside the client's measurement (``summary.json`` ``phasebench.server_view``)."""

from .scrape import Scraper, Snapshot, parse_metrics
from .view import ServerView, build_view

__all__ = ["Scraper", "Snapshot", "parse_metrics", "ServerView", "build_view"]
