"""Property: however a record set is split, reordered, batched or repeated, the stored result is the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audits import rawcodec
from audits.ingest import Ingestor, start_run
from audits.models import (
    Event,
    IngestRun,
    KeyDay,
    KeyHour,
    KeyPrincipalDay,
    KeyPrincipalHour,
    KeyServiceDay,
    OperationDay,
    PrincipalDay,
    RawBlock,
)
from tests.audits.support import (
    delete_ingested,
    rollups_as_group_by,
    stored_rollups,
    stored_summaries,
    summaries_as_group_by,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def base_records() -> list[dict]:
    from audits.synthetic import generate_records

    # Few keys and days, so that many events share a rollup row.
    return list(
        generate_records(
            40, seed=9, start=T0, days=2, accounts=("111122223333",), regions=("us-east-1",), keys_per_account_region=2
        )
    )


BASE = base_records()
# A few of them made by kmsdash itself (its user agent; no source is configured, so the agent alone
# decides): the rollup counts them apart, every other summary leaves them out.
MIXED = [
    {**record, "userAgent": "Boto3/1.35.0 kmsdash/0.1.0", "eventID": f"own-{n}"} if n % 5 == 0 else record
    for n, record in enumerate(BASE)
]
OWN = sum(1 for n in range(len(BASE)) if n % 5 == 0)


def stored_events() -> set[tuple]:
    return {
        (
            e.recipient_account_id,
            e.event_id,
            e.event_time,
            e.key,
            e.principal,
            e.event_name,
            e.after_hours,
            json.dumps(e.raw_record(), sort_keys=True),
        )
        for e in Event.objects.all()
    }


def stored_raw_records() -> int:
    """Records kept in raw blocks, counting every non-empty slot: a duplicate must store nothing."""
    return sum(
        sum(1 for text in rawcodec.decode_block(data) if text)
        for data in RawBlock.objects.values_list("data", flat=True)
    )


def ingest_in_runs(runs: list[list[dict]], batch_size: int) -> None:
    for records in runs:
        ingestor = Ingestor(start_run("files"), batch_size=batch_size)
        for record in records:
            ingestor.add(record)
        ingestor.flush()


@pytest.mark.django_db
@settings(max_examples=30, deadline=None)
@given(
    order=st.permutations(range(len(MIXED))),
    repeats=st.lists(st.integers(0, len(MIXED) - 1), max_size=40),
    cuts=st.lists(st.integers(0, 80), max_size=4),
    batch_size=st.integers(1, 12),
)
def test_any_split_reordering_or_duplication_stores_what_one_clean_pass_stores(order, repeats, cuts, batch_size):
    delete_ingested()
    ingest_in_runs([MIXED], batch_size=1000)
    clean_events, clean_rollups = stored_events(), stored_rollups()
    assert len(clean_events) == len(MIXED)

    delete_ingested()
    stream = [MIXED[i] for i in order] + [MIXED[i] for i in repeats]
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    runs = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    ingest_in_runs(runs, batch_size=batch_size)

    assert stored_events() == clean_events
    assert stored_raw_records() == len(MIXED)
    assert stored_rollups() == clean_rollups
    assert stored_rollups() == rollups_as_group_by()
    assert stored_summaries() == summaries_as_group_by()
    assert sum(KeyDay.objects.values_list("calls", flat=True)) == len(MIXED) - OWN
    assert Event.objects.filter(own=True).count() == OWN
    runs_total = sum(IngestRun.objects.values_list("events_new", flat=True))
    duplicates = sum(IngestRun.objects.values_list("duplicates", flat=True))
    assert (runs_total, duplicates) == (len(MIXED), len(repeats))


@pytest.mark.django_db
def test_the_backfill_migrations_rebuild_the_summaries_ingestion_keeps():
    from importlib import import_module

    from django.db import connection

    delete_ingested()
    ingest_in_runs([BASE], batch_size=7)
    kept = stored_summaries()
    assert all(kept.values())
    for model in (KeyDay, OperationDay, PrincipalDay, KeyPrincipalDay, KeyServiceDay, KeyHour, KeyPrincipalHour):
        model.objects.all().delete()
    with connection.cursor() as cursor:
        for name in ("0003_backfill_rollup_summaries", "0005_backfill_key_reach_summaries"):
            for statement in import_module(f"audits.migrations.{name}").BACKFILL:
                cursor.execute(statement)
        for statement in import_module("audits.migrations.0016_backfill_hourly_summaries").statements(
            connection.vendor
        ):
            cursor.execute(statement)
    assert stored_summaries() == kept == summaries_as_group_by()
