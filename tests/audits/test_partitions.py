"""Partitioned events on PostgreSQL: conversion, purge by dropping days, the default partition, exact dedup."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection

from audits import partitions, retention
from audits.ingest import Counts, ingest_records, start_run
from audits.models import Event, IngestRun, RawBlock, Retention
from audits.synthetic import identity_role, kms_record

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite keeps one plain table"),
]

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
OLD_DAYS = [date(2026, 2, 10), date(2026, 2, 11)]  # before the 30-day horizon (2026-03-01)
RECENT_DAY = date(2026, 3, 30)


def record(n: int, day: date, name: str = "Decrypt", minute: int = 0) -> dict:
    return kms_record(
        event_name=name,
        event_time=datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9, minutes=minute),
        key_arn=KEY,
        identity=identity_role(ACCOUNT, "app", "s1"),
        region="us-east-1",
        recipient_account_id=ACCOUNT,
        event_id=f"00000000-0000-4000-8000-{n:012d}",
    )


def ingest(records) -> Counts:
    return ingest_records(list(records), run=start_run(IngestRun.Kind.FILES))


def report() -> dict:
    out = io.StringIO()
    call_command("kms_report", "--format", "json", "--since", "2026-01-01", "--until", "2026-04-01", stdout=out)
    return json.loads(out.getvalue())


def rows_in(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        return cursor.fetchone()[0]


def day_partitions() -> list[date]:
    with connection.cursor() as cursor:
        return partitions.days(cursor)


def partitioned_now() -> None:
    """The test's transaction converts the tables if this database keeps them plain (DDL rolls back)."""
    if not partitions.is_partitioned():
        with connection.schema_editor() as editor:
            partitions.convert(editor, Event, RawBlock, now=NOW)


OLD = [record(n, OLD_DAYS[n % 2], minute=n) for n in range(6)]
OLD_CRITICAL = [record(100, OLD_DAYS[0], "CreateGrant", minute=30), record(101, OLD_DAYS[1], "PutKeyPolicy")]
RECENT = [record(200 + n, RECENT_DAY, minute=n) for n in range(3)]


def test_converting_plain_tables_keeps_every_event_and_id_files_critical_ones_apart_and_still_deduplicates():
    if partitions.is_partitioned():
        with connection.schema_editor() as editor:
            partitions.unconvert(editor, Event, RawBlock)
    assert not partitions.is_partitioned()
    ingest([*OLD, *OLD_CRITICAL, *RECENT])
    before = sorted(Event.objects.values_list("id", "event_id", "event_time", "raw_block_id", "raw_index"))
    counts = report()
    drawer = {e.event_id: e.raw_record() for e in Event.objects.all()}
    RawBlock.objects.update(critical=False)  # as blocks written before the flag existed

    with connection.schema_editor() as editor:
        partitions.convert(editor, Event, RawBlock, now=NOW)

    assert partitions.is_partitioned()
    assert sorted(Event.objects.values_list("id", "event_id", "event_time", "raw_block_id", "raw_index")) == before
    assert {e.event_id: e.raw_record() for e in Event.objects.all()} == drawer
    assert rows_in("audits_event_kept") == len(OLD_CRITICAL) and rows_in("audits_event_default") == 0
    assert set(OLD_DAYS) | {RECENT_DAY} <= set(day_partitions())
    assert rows_in(partitions.partition_name("audits_event", OLD_DAYS[0])) == 3
    # The block holding a critical record is kept with it.
    critical_blocks = set(Event.objects.filter(critical=True).values_list("raw_block_id", flat=True))
    assert critical_blocks <= set(RawBlock.objects.filter(critical=True).values_list("pk", flat=True))
    assert ingest([*OLD, *OLD_CRITICAL, *RECENT]).events_new == 0 and report() == counts
    new = ingest([record(300, RECENT_DAY, minute=50)])
    assert new.events_new == 1 and Event.objects.get(event_id__endswith="000000000300").pk > max(r[0] for r in before)


def test_a_purge_drops_the_old_days_and_keeps_critical_events_their_records_and_every_count():
    partitioned_now()
    ingest([*OLD, *OLD_CRITICAL, *RECENT])
    partitions.ensure(now=datetime.combine(OLD_DAYS[0], datetime.min.time(), tzinfo=UTC), ahead=50)
    assert set(OLD_DAYS) | {RECENT_DAY} <= set(day_partitions())
    counts = report()
    critical = {e.event_id: e.raw_record() for e in Event.objects.filter(critical=True)}
    assert len(critical) == 2 and all(critical.values())

    result = retention.purge_events(days=30, now=NOW)

    assert result.events == len(OLD)
    assert set(Event.objects.values_list("event_id", flat=True)) == {r["eventID"] for r in [*OLD_CRITICAL, *RECENT]}
    assert {e.event_id: e.raw_record() for e in Event.objects.filter(critical=True)} == critical
    assert all(e.raw_record() for e in Event.objects.all())
    assert min(day_partitions()) >= date(2026, 3, 1)
    with connection.cursor() as cursor:
        assert partitions.leftovers(cursor) == []  # the detached days were dropped too
    assert report() == counts
    mark = Retention.objects.get()
    assert (mark.purged_before, mark.events_deleted) == (datetime(2026, 3, 1, tzinfo=UTC), len(OLD))
    assert mark.raw_blocks_deleted == result.raw_blocks >= len(OLD_DAYS)  # a block per old day, none critical
    # Read again: the old events are refused as expired, the critical ones are duplicates.
    again = ingest([*OLD, *OLD_CRITICAL])
    assert (again.expired, again.duplicates, again.events_new) == (len(OLD), len(OLD_CRITICAL), 0)
    assert report() == counts


def test_an_event_of_a_day_without_a_partition_lands_in_the_default_one_and_moves_into_its_day_when_made():
    partitioned_now()
    far = date(2031, 6, 1)
    assert far not in day_partitions()
    ingest([record(1, far), record(2, far, "DisableKey", minute=1)])
    assert rows_in("audits_event_default") == 1 and rows_in("audits_rawblock_default") == 1
    counts = report()

    created = partitions.ensure(now=datetime.combine(far, datetime.min.time(), tzinfo=UTC), ahead=0)

    assert far in created and rows_in("audits_event_default") == 0 and rows_in("audits_rawblock_default") == 0
    assert rows_in(partitions.partition_name("audits_event", far)) == 1
    assert rows_in(partitions.partition_name("audits_rawblock", far)) == 1
    assert all(e.raw_record() for e in Event.objects.all())
    # The same events read again meet their first copies wherever these live now.
    assert ingest([record(1, far), record(2, far, "DisableKey", minute=1)]).duplicates == 2
    assert report() == counts


def test_events_of_a_day_left_in_the_default_partition_are_still_purged_row_by_row():
    partitioned_now()
    straggler_day = date(2026, 1, 20)  # no partition was ever made for it
    assert straggler_day not in day_partitions()
    ingest([record(1, straggler_day), record(2, straggler_day, "ScheduleKeyDeletion"), *RECENT])
    counts = report()

    result = retention.purge_events(days=30, now=NOW)

    assert result.events == 1 and Retention.objects.get().events_deleted == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audits_event_default WHERE event_time < '2026-03-01'")
        assert cursor.fetchone()[0] == 0
    remaining = {r["eventID"] for r in [record(2, straggler_day, "ScheduleKeyDeletion"), *RECENT]}
    assert set(Event.objects.values_list("event_id", flat=True)) == remaining and report() == counts


def test_an_event_read_again_in_a_later_batch_or_twice_in_one_is_stored_once():
    partitioned_now()
    first = record(7, RECENT_DAY)
    assert ingest([first]).events_new == 1
    assert ingest([first, first]).duplicates == 2
    assert ingest([first, record(8, RECENT_DAY, "CreateKey")]).events_new == 1
    assert ingest([record(8, RECENT_DAY, "CreateKey")]).duplicates == 1
    assert Event.objects.filter(event_id=first["eventID"]).count() == 1 and Event.objects.count() == 2


def test_the_beat_task_makes_the_partitions_of_the_coming_week_once(settings, time_machine):
    from audits.tasks import ensure_event_partitions

    partitioned_now()
    time_machine.move_to(datetime(2030, 1, 10, 12, tzinfo=UTC))
    assert settings.CELERY_BEAT_SCHEDULE["event-partitions"]["task"] == ensure_event_partitions.name

    assert ensure_event_partitions() == 9  # yesterday, today and 7 days ahead
    assert {date(2030, 1, 9) + timedelta(days=n) for n in range(9)} <= set(day_partitions())
    assert ensure_event_partitions() == 0
