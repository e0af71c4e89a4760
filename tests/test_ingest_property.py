"""Property: however a record set is split, reordered, batched or repeated, the stored result is the same."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audits.ingest import Ingestor, start_run
from audits.models import DailyRollup, Event, IngestRun, Quarantine
from tests.test_ingest_core import rollups_as_group_by, stored_rollups

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def base_records() -> list[dict]:
    from audits.synthetic import generate_records

    # Few keys and days, so that many events share a rollup row.
    return list(generate_records(40, seed=9, start=T0, days=2, accounts=("111122223333",),
                                 regions=("us-east-1",), keys_per_account_region=2))


BASE = base_records()


def clear() -> None:
    for model in (Event, DailyRollup, Quarantine, IngestRun):
        model.objects.all().delete()


def stored_events() -> set[tuple]:
    return set(Event.objects.values_list("recipient_account_id", "event_id", "event_time", "key", "principal",
                                         "event_name", "after_hours", "raw"))


def ingest_in_runs(runs: list[list[dict]], batch_size: int) -> None:
    for records in runs:
        ingestor = Ingestor(start_run("files"), batch_size=batch_size)
        for record in records:
            ingestor.add(record)
        ingestor.flush()


@pytest.mark.django_db
@settings(max_examples=30, deadline=None)
@given(
    order=st.permutations(range(len(BASE))),
    repeats=st.lists(st.integers(0, len(BASE) - 1), max_size=40),
    cuts=st.lists(st.integers(0, 80), max_size=4),
    batch_size=st.integers(1, 12),
)
def test_any_split_reordering_or_duplication_stores_what_one_clean_pass_stores(order, repeats, cuts, batch_size):
    clear()
    ingest_in_runs([BASE], batch_size=1000)
    clean_events, clean_rollups = stored_events(), stored_rollups()
    assert len(clean_events) == len(BASE)

    clear()
    stream = [BASE[i] for i in order] + [BASE[i] for i in repeats]
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    runs = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    ingest_in_runs(runs, batch_size=batch_size)

    assert stored_events() == clean_events
    assert stored_rollups() == clean_rollups
    assert stored_rollups() == rollups_as_group_by()
    runs_total = sum(IngestRun.objects.values_list("events_new", flat=True))
    duplicates = sum(IngestRun.objects.values_list("duplicates", flat=True))
    assert (runs_total, duplicates) == (len(BASE), len(repeats))
