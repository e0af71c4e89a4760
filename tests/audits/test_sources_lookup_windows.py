"""LookupEvents window planning: whatever the schedule and failures, no gap and steady progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from hypothesis import given
from hypothesis import strategies as st

from audits.sources.lookup import Window, plan_windows

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


@given(st.lists(st.tuples(st.integers(0, 24 * 60), st.booleans()), min_size=1, max_size=25))
def test_scheduled_windows_cover_everything_since_the_first_run_without_a_gap(steps):
    """Runs at arbitrary times, some failing mid-window, as `ingest_lookup` drives the planner."""
    overlap = timedelta(minutes=settings.KMSDASH_LOOKUP_OVERLAP_MINUTES)
    settle = timedelta(minutes=settings.KMSDASH_LOOKUP_SETTLE_MINUTES)
    max_window = timedelta(minutes=settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES)
    now, checkpoint = T0, None
    committed: list[Window] = []
    for minutes, fails in steps:
        now += timedelta(minutes=minutes)
        for _ in range(10_000):
            window = next(plan_windows(checkpoint, now), None)
            if window is None:
                break
            assert window.start < window.end <= now - settle
            assert window.end - window.start <= max_window
            if checkpoint is None:
                assert window.start == now - timedelta(days=settings.KMSDASH_LOOKUP_INITIAL_DAYS)
            else:
                assert window.start == checkpoint - overlap  # re-reads the overlap, never skips
                assert window.end > checkpoint  # progress, so a run always ends
            if fails:
                break  # the checkpoint stays; the next run starts from it again
            committed.append(window)
            checkpoint = window.end
        else:
            raise AssertionError("a run never ran out of windows")
    if committed:
        for previous, current in zip(committed, committed[1:], strict=False):
            assert current.start <= previous.end  # contiguous coverage
        assert checkpoint == committed[-1].end


def test_a_backfill_is_cut_into_max_window_pieces_that_tile_the_range_exactly():
    since, until = T0 - timedelta(days=2), T0 - timedelta(days=1, minutes=7)
    windows = list(plan_windows(None, T0, since=since, until=until))

    assert windows[0].start == since and windows[-1].end == until
    assert all(a.end == b.start for a, b in zip(windows, windows[1:], strict=False))
    assert all(w.end - w.start <= timedelta(minutes=settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES) for w in windows)


def test_an_until_in_the_future_stops_at_now():
    windows = list(plan_windows(None, T0, since=T0 - timedelta(minutes=30), until=T0 + timedelta(days=1)))
    assert windows == [Window(T0 - timedelta(minutes=30), T0)]


def test_nothing_is_planned_until_there_is_something_past_the_checkpoint():
    settle = timedelta(minutes=settings.KMSDASH_LOOKUP_SETTLE_MINUTES)
    assert list(plan_windows(T0 - settle, T0)) == []
    assert len(list(plan_windows(T0 - settle - timedelta(seconds=1), T0))) == 1
