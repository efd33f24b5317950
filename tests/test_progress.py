"""The progress line of a --duration run: time left and the live request rate, from a fixed state (no clock)."""

from __future__ import annotations

from rich.console import Console

from phasebench.progress import DurationState, RateMeter, RichProgress, duration_line
from phasebench.records import RequestRecord


def test_duration_line_shows_time_left_and_rate_not_a_question_mark():
    st = DurationState(elapsed_s=42.0, duration_s=60.0, done=18, errors=0, rate=4.25)
    assert duration_line(st) == "18 done · 4.2 req/s · 0:18 left"
    assert "?" not in duration_line(st)


def test_duration_line_with_errors_a_count_and_hours():
    st = DurationState(elapsed_s=10.0, duration_s=7210.0, done=30, errors=2, rate=3.0, total=100)
    assert duration_line(st) == "30/100 done · 2 errors · 3.0 req/s · 2:00:00 left"
    assert duration_line(DurationState(61.0, 60.0, 240, 0, 4.0)).endswith("finishing")


def test_rate_meter_counts_a_sliding_window():
    m = RateMeter(window_s=5.0)
    for t in (100.5, 101.0, 102.0):
        m.add(t)
    assert m.rate(now=102.0, t0=100.0) == 3 / 2.0  # since the start: 2 s so far
    for t in (104.0, 106.0):
        m.add(t)
    assert m.rate(now=107.0, t0=100.0) == 3 / 5.0  # 102, 104, 106 inside the last 5 s
    assert RateMeter().rate(now=1.0, t0=1.0) == 0.0


def test_duration_bar_renders_the_line_on_a_terminal():
    console = Console(force_terminal=True, width=120, record=True, color_system=None)
    p = RichProgress(console)
    p.start("server", None, 3600.0)
    for i in range(3):
        p.advance(RequestRecord(index=i, request_id=str(i), scheduled_ns=0, error="boom" if i == 0 else None))
    p.stop()
    text = console.export_text()
    assert "3 done · 1 errors ·" in text and "left" in text and "/?" not in text
