"""Event retention: old events purged day by day, critical ones and every count kept, nothing counted twice."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor

from audits import partitions, rawcodec, retention
from audits.ingest import Counts, ingest_records, start_run
from audits.models import DailyRollup, Event, IngestRun, RawBlock, Retention
from audits.synthetic import identity_role, kms_record
from kmsdash.roles import ADMIN, ANALYST
from tests.support import make_user, manage_py

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
HORIZON = datetime(2026, 3, 1, tzinfo=UTC)  # 30 days before NOW, at UTC midnight
OLD = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)
RECENT = datetime(2026, 3, 30, 9, 0, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def record(n: int, when: datetime, name: str = "Decrypt") -> dict:
    return kms_record(
        event_name=name,
        event_time=when,
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


def rollups() -> list[tuple]:
    return sorted(DailyRollup.objects.values_list("day", "operation", "count", "first_seen", "last_seen"))


def purge(days: int = 30, **kwargs) -> retention.PurgeResult:
    return retention.purge_events(days=days, now=NOW, **kwargs)


# Three old days of Decrypt, an old ScheduleKeyDeletion, and recent calls.
OLD_DECRYPTS = [record(n, OLD + timedelta(days=n % 3, minutes=n)) for n in range(9)]
OLD_CRITICAL = record(100, OLD + timedelta(hours=2), "ScheduleKeyDeletion")
RECENT_CALLS = [record(200 + n, RECENT + timedelta(minutes=n)) for n in range(4)]
EVERYTHING = [*OLD_DECRYPTS, OLD_CRITICAL, *RECENT_CALLS]


def test_the_horizon_is_utc_midnight_the_given_days_ago_and_none_when_retention_is_off(settings):
    assert retention.horizon(days=30, now=NOW) == HORIZON
    settings.KMSDASH_EVENT_RETENTION_DAYS = 0
    assert retention.horizon(now=NOW) is None
    settings.KMSDASH_EVENT_RETENTION_DAYS = 7
    assert retention.horizon(now=NOW) == datetime(2026, 3, 24, tzinfo=UTC)


@pytest.mark.parametrize(("days", "ok"), [("400", True), ("30", False), ("-1", False)])
def test_settings_refuse_a_retention_the_encryption_context_rules_would_outlast(days, ok):
    result = manage_py("check", KMSDASH_EVENT_RETENTION_DAYS=days)
    assert (result.returncode == 0) == ok, result.stderr
    assert ok or "KMSDASH_EVENT_RETENTION_DAYS must" in result.stderr


def test_a_purge_deletes_old_events_keeps_critical_and_recent_ones_and_every_count():
    ingest(EVERYTHING)
    before = (report(), rollups())

    result = purge()

    assert (result.horizon, result.events) == (HORIZON, len(OLD_DECRYPTS))
    kept = Event.objects.order_by("event_time").values_list("event_name", "event_time")
    assert [name for name, _ in kept] == ["ScheduleKeyDeletion"] + ["Decrypt"] * len(RECENT_CALLS)
    assert (report(), rollups()) == before
    mark = Retention.objects.get()
    assert (mark.purged_before, mark.events_deleted) == (HORIZON, len(OLD_DECRYPTS))


def test_raw_blocks_go_with_their_last_event_and_keep_only_the_records_of_kept_events():
    if partitions.is_partitioned():
        pytest.skip("partitioned events: a block per UTC day and criticality (tests/audits/test_partitions.py)")
    ingest(OLD_DECRYPTS[:3])  # a block of old events only
    ingest([*OLD_DECRYPTS[3:6], OLD_CRITICAL])  # old events and a critical one
    ingest([*OLD_DECRYPTS[6:], RECENT_CALLS[0]])  # old events and a recent one
    blocks = list(RawBlock.objects.order_by("pk").values_list("pk", "last_event_time"))
    assert len(blocks) == 3 and blocks[2][1] == RECENT
    size = len(RawBlock.objects.get(pk=blocks[1][0]).data)

    result = purge()

    assert (result.raw_blocks, result.raw_blocks_rewritten) == (1, 1)
    assert list(RawBlock.objects.order_by("pk").values_list("pk", flat=True)) == [blocks[1][0], blocks[2][0]]
    critical = Event.objects.get(event_name="ScheduleKeyDeletion")
    assert critical.raw_record() == OLD_CRITICAL
    rewritten = RawBlock.objects.get(pk=blocks[1][0]).data
    assert [i for i, text in enumerate(rawcodec.decode_block(rewritten)) if text] == [critical.raw_index]
    assert len(rewritten) < size
    assert Event.objects.get(event_time=RECENT).raw_record() == RECENT_CALLS[0]
    assert len(rawcodec.decode_block(RawBlock.objects.get(pk=blocks[2][0]).data)) == 4  # untouched

    # Two days on, the recent block goes too; the rewritten one is not rewritten again.
    later = retention.purge_events(days=1, now=NOW + timedelta(days=2))
    assert (later.raw_blocks, later.raw_blocks_rewritten) == (1, 0)
    assert Event.objects.get(event_name="ScheduleKeyDeletion").raw_record() == OLD_CRITICAL


def test_records_read_again_after_a_purge_are_refused_as_expired_and_no_count_changes():
    ingest(EVERYTHING)
    purge()
    before = (report(), rollups(), Event.objects.count())

    counts = ingest(EVERYTHING)

    assert counts == Counts(records_read=len(EVERYTHING), duplicates=1 + len(RECENT_CALLS), expired=len(OLD_DECRYPTS))
    assert IngestRun.objects.order_by("-pk").first().expired == len(OLD_DECRYPTS)
    assert (report(), rollups(), Event.objects.count()) == before


def test_a_critical_event_older_than_the_purge_is_still_ingested_and_counted():
    ingest(EVERYTHING)
    purge()
    late = record(300, OLD + timedelta(hours=5), "DisableKey")

    assert ingest([late]) == Counts(records_read=1, events_new=1)
    assert report()["totals"]["events"] == len(EVERYTHING) + 1


def test_events_newer_than_the_mark_are_written_as_usual_until_the_next_purge():
    ingest(EVERYTHING)
    purge()
    between = record(400, HORIZON + timedelta(days=2))  # older than a later horizon, newer than the mark

    assert ingest([between]) == Counts(records_read=1, events_new=1)
    assert purge(days=25).events == 1
    assert Retention.objects.get().purged_before == HORIZON + timedelta(days=5)
    assert report()["totals"]["events"] == len(EVERYTHING) + 1


def test_a_longer_retention_later_never_moves_the_mark_back_and_deletes_nothing_more():
    ingest(EVERYTHING)
    purge()
    assert purge(days=60) == retention.PurgeResult(datetime(2026, 1, 30, tzinfo=UTC), 0, 0)
    assert Retention.objects.get().purged_before == HORIZON


def test_nothing_is_purged_when_retention_is_off(settings):
    settings.KMSDASH_EVENT_RETENTION_DAYS = 0
    ingest(EVERYTHING)

    assert retention.purge_events(now=NOW) == retention.PurgeResult(None)
    assert Event.objects.count() == len(EVERYTHING)
    assert not Retention.objects.exists()


def test_a_dry_run_counts_what_the_purge_then_deletes():
    ingest(OLD_DECRYPTS[:3])
    ingest([*OLD_DECRYPTS[3:], OLD_CRITICAL, *RECENT_CALLS])

    # Blocks of old records only (one here; one per UTC day when events are partitioned).
    old_blocks = RawBlock.objects.filter(critical=False, last_event_time__lt=HORIZON).count()

    dry = purge(dry_run=True)

    assert Event.objects.count() == len(EVERYTHING) and not Retention.objects.exists()
    assert dry == purge()
    assert (dry.events, dry.raw_blocks) == (len(OLD_DECRYPTS), old_blocks) and old_blocks >= 1


def test_the_command_reports_what_it_deleted_and_refuses_a_retention_of_zero_days(time_machine):
    time_machine.move_to(NOW)
    ingest(OLD_DECRYPTS)  # a raw block of their own
    ingest([OLD_CRITICAL, *RECENT_CALLS])
    old_blocks = RawBlock.objects.filter(critical=False, last_event_time__lt=HORIZON).count()  # 1 unpartitioned
    out = io.StringIO()

    call_command("purge_events", "--days", "30", stdout=out)

    assert out.getvalue().strip() == (
        f"events before 2026-03-01 00:00 UTC: deleted {len(OLD_DECRYPTS)} events, and {old_blocks} raw record blocks "
        "(0 rewritten with the records of kept events only)"
    )
    with pytest.raises(CommandError):
        call_command("purge_events", "--days", "0")


def test_the_daily_task_is_scheduled_and_purges_with_the_configured_retention(settings, time_machine):
    from audits.tasks import purge_events

    assert settings.CELERY_BEAT_SCHEDULE["event-retention"]["task"] == purge_events.name
    time_machine.move_to(NOW)
    ingest(EVERYTHING)
    settings.KMSDASH_EVENT_RETENTION_DAYS = 30

    assert purge_events.apply().get() == len(OLD_DECRYPTS)


def test_the_explorer_and_the_health_page_say_how_far_events_were_purged(client, settings):
    settings.KMSDASH_EVENT_RETENTION_DAYS = 30
    ingest(EVERYTHING)
    purge()
    client.force_login(make_user("ana", ANALYST, ADMIN))

    page = client.get("/events/?since=2026-01-01").content.decode()
    assert "Events before 2026-03-01 00:00 UTC were purged" in page
    assert "retention-note" not in client.get("/events/?since=2026-03-05").content.decode()
    health = client.get("/health/").content.decode()
    assert "<strong>30 days</strong>" in health and "Events before 2026-03-01 00:00 UTC purged" in health


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite serialises writers itself")
def test_a_purge_step_waits_for_an_ingest_batch_in_flight():
    holding, release = threading.Event(), threading.Event()

    def batch_in_flight():
        try:
            with transaction.atomic():
                retention.writable([])  # what every ingest batch does first
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=batch_in_flight)
    thread.start()
    try:
        assert holding.wait(10)
        with pytest.raises(OperationalError, match="lock timeout"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '300ms'")
            purge()
    finally:
        release.set()
        thread.join()
    assert purge().horizon == HORIZON  # and goes through once the batch is done


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_blocks_written_before_it_the_time_of_their_last_event():
    before = [("audits", "0012_hashed_unique_keys")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldEvent, OldBlock = old.get_model("audits", "Event"), old.get_model("audits", "RawBlock")
    first, second = OldBlock.objects.create(data=b""), OldBlock.objects.create(data=b"")
    common = {"recipient_account_id": ACCOUNT, "event_name": "Decrypt", "region": "us-east-1"}
    OldEvent.objects.create(event_id="1", event_time=OLD, raw_block_id=first.pk, **common)
    OldEvent.objects.create(event_id="2", event_time=RECENT, raw_block_id=first.pk, **common)
    OldEvent.objects.create(event_id="3", event_time=OLD, raw_block_id=second.pk, **common)
    try:
        executor = MigrationExecutor(connection)
        executor.migrate([("audits", "0013_retention")])
        assert dict(RawBlock.objects.values_list("pk", "last_event_time")) == {first.pk: RECENT, second.pk: OLD}
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
