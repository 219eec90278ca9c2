"""The backfill line's arithmetic: rates over a sliding window, the ETA, the final averages."""

from __future__ import annotations

import pytest

from indexer import progress
from indexer.progress import Meter, Rates, describe


def test_rates_follow_the_last_window_and_give_an_eta() -> None:
    """Blocks/s and events/s are measured over the last WINDOW_S seconds (a slow start does
    not drag them), the ETA is the blocks left at that pace, and the overall figures average
    the whole run."""
    meter = Meter(start_block=1000, last_block=5000, events=0.0, now=0.0)
    first = meter.add(1.0, 1010, 100.0)  # slow start: 10 blocks/s
    assert first == Rates(10.0, 100.0, pytest.approx(399.0))
    t, block, events = 1.0, 1010, 100.0
    while t < 1.0 + 2 * progress.WINDOW_S:  # then 50 blocks/s, 1,000 events/s
        t, block, events = t + 0.5, block + 25, events + 500
        rates = meter.add(t, block, events)
    assert rates.blocks_per_s == pytest.approx(50.0, rel=0.01)
    assert rates.events_per_s == pytest.approx(1000.0, rel=0.01)
    assert rates.eta_s == pytest.approx((5000 - block) / 50.0, rel=0.01)
    overall = meter.overall(t, block, events)
    assert overall.blocks_per_s == pytest.approx((block - 1000) / t)
    assert overall.events_per_s == pytest.approx(events / t)


def test_no_time_no_progress_and_other_writers_show_as_unknown() -> None:
    """Before any time has passed nothing is measurable; with no progress there is no ETA;
    while another process writes (events None) events/s is unknown, not 0."""
    meter = Meter(start_block=0, last_block=100, events=5.0, now=10.0)
    assert meter.add(10.0, 0, 5.0) == Rates(None, None, None)
    stalled = meter.add(12.0, 0, 5.0)
    assert stalled.blocks_per_s == 0.0
    assert stalled.eta_s is None
    waiting = meter.add(14.0, 40, None)
    assert waiting.events_per_s is None
    assert waiting.blocks_per_s == pytest.approx(10.0)
    assert waiting.eta_s == pytest.approx(6.0)
    assert meter.add(15.0, 100, None).eta_s == 0.0


def test_describe_formats_the_figures() -> None:
    """Thousands separated, small rates with one decimal, unknowns as '-', ETA as h:mm:ss,
    and the last frame's tail instead of the ETA."""
    assert describe(Rates(1234.4, 56789.0, 3905.0)) == (
        "1,234 blocks/s  56,789 events/s  ETA 1:05:05"
    )
    assert describe(Rates(2.25, None, None)) == "2.2 blocks/s  - events/s  ETA -"
    assert describe(Rates(10.0, 0.0, 0.0), tail="done") == "10 blocks/s  0.0 events/s  done"
