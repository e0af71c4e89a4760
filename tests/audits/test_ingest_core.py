"""The write path: dedupe, rollups in step with events, quarantine, the run ledger."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from django.db import connection, connections
from django.db.models import Sum

from audits.ingest import INVALID_UTF8_MARK, Counts, Ingestor, finish_run, ingest_records, start_run
from audits.models import DailyRollup, Event, IngestRun, Quarantine
from audits.synthetic import generate_records, identity_role, identity_service, kms_record
from tests.audits.support import rollups_as_group_by, stored_rollups

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def decrypt(n: int = 0, **overrides) -> dict:
    values: dict[str, Any] = dict(
        event_name="Decrypt",
        event_time=T0 + timedelta(minutes=n),
        key_arn=KEY,
        identity=identity_role(ACCOUNT, "app", "s1"),
        region="us-east-1",
        recipient_account_id=ACCOUNT,
        event_id=f"00000000-0000-4000-8000-{n:012d}",
    )
    values.update(overrides)
    return kms_record(**values)


def rollup_total() -> int:
    return DailyRollup.objects.aggregate(n=Sum("count", default=0))["n"]


@pytest.mark.django_db
def test_an_event_and_its_rollup_are_stored_with_the_raw_record_kept():
    record = decrypt(1, error_code="AccessDenied", error_message="not <b>allowed</b>")
    counts = ingest_records([record], run=start_run("files"))

    assert counts == Counts(records_read=1, events_new=1)
    event = Event.objects.get()
    assert (event.event_name, event.key, event.error_code) == ("Decrypt", KEY, "AccessDenied")
    assert event.principal == f"arn:aws:iam::{ACCOUNT}:role/app"
    assert event.raw_record() == record
    rollup = DailyRollup.objects.get()
    assert (rollup.day, rollup.account_id, rollup.key, rollup.operation, rollup.error_code, rollup.count) == (
        date(2026, 3, 2),
        ACCOUNT,
        KEY,
        "Decrypt",
        "AccessDenied",
        1,
    )
    assert rollup.first_seen == rollup.last_seen == T0 + timedelta(minutes=1)


@pytest.mark.django_db
def test_a_duplicate_event_is_stored_once_within_a_batch_across_batches_and_across_runs():
    records = [decrypt(n) for n in range(7)]
    run = start_run("files")
    ingestor = Ingestor(run, batch_size=3)
    for record in records + records[:2] + records:  # in-batch and cross-batch duplicates
        ingestor.add(record)
    ingestor.flush()
    assert ingestor.counts == Counts(records_read=16, events_new=7, duplicates=9)

    second = ingest_records(records, run=start_run("lookup"))

    assert second == Counts(records_read=7, events_new=0, duplicates=7)
    assert Event.objects.count() == 7
    assert rollup_total() == 7
    assert stored_rollups() == rollups_as_group_by()


@pytest.mark.django_db
def test_the_same_event_id_in_two_accounts_is_two_events():
    ingest_records([decrypt(1), decrypt(1, recipient_account_id="444455556666")], run=start_run("files"))
    assert Event.objects.count() == 2
    assert rollup_total() == 2


@pytest.mark.django_db
def test_rollups_keep_the_first_and_last_time_across_batches_arriving_out_of_order():
    ingest_records([decrypt(30)], run=start_run("files"))
    ingest_records([decrypt(5), decrypt(50)], run=start_run("files"))
    rollup = DailyRollup.objects.get()
    assert rollup.count == 3
    assert rollup.first_seen == T0 + timedelta(minutes=5)
    assert rollup.last_seen == T0 + timedelta(minutes=50)


@pytest.mark.django_db
def test_rollups_split_on_every_dimension_and_on_the_utc_day():
    records = [
        decrypt(1),
        decrypt(2, event_name="Encrypt"),
        decrypt(3, error_code="AccessDenied"),
        decrypt(4, identity=identity_service("s3.amazonaws.com")),
        decrypt(5, region="eu-west-1"),
        decrypt(6, event_time=T0 + timedelta(hours=2)),
        decrypt(7, event_time=T0 + timedelta(days=1)),  # the next UTC day
    ]
    ingest_records(records, run=start_run("files"))
    assert DailyRollup.objects.count() == 6  # 1 and 6 share every dimension
    assert set(DailyRollup.objects.values_list("day", flat=True)) == {date(2026, 3, 2), date(2026, 3, 3)}
    assert stored_rollups() == rollups_as_group_by()


@pytest.mark.django_db
def test_after_hours_follows_the_configured_business_hours(settings):
    settings.KMSDASH_BUSINESS_HOURS = (time(9), time(17))
    settings.KMSDASH_TIME_ZONE = "Europe/Berlin"
    # 12:00 UTC = 13:00 Berlin (inside); 17:30 UTC = 18:30 Berlin (after hours).
    ingest_records([decrypt(0), decrypt(330)], run=start_run("files"))
    assert dict(Event.objects.values_list("event_time", "after_hours")) == {
        T0: False,
        T0 + timedelta(minutes=330): True,
    }
    assert dict(DailyRollup.objects.values_list("after_hours", "count")) == {False: 1, True: 1}


@pytest.mark.django_db
def test_non_kms_records_are_ignored_and_malformed_ones_quarantined_while_the_rest_lands():
    s3_event = {"eventSource": "s3.amazonaws.com", "eventName": "GetObject", "eventID": "x"}
    bad_time = decrypt(2, event_id="bad-time")
    bad_time["eventTime"] = "yesterday"
    records = [decrypt(1), s3_event, bad_time, "{not json", [1, 2], decrypt(3)]
    run = start_run("files")

    counts = ingest_records(records, run=run, location="batch.json")

    assert counts == Counts(records_read=6, events_new=2, ignored=1, quarantined=3)
    assert Event.objects.count() == 2 and rollup_total() == 2
    rows = {q.raw[:30]: q for q in Quarantine.objects.all()}
    assert len(rows) == 3
    assert all(q.run_id == run.pk and q.location == "batch.json" and q.reason for q in rows.values())
    time_row = next(q for q in rows.values() if "bad-time" in q.raw)
    assert "eventTime" in time_row.reason
    assert json.loads(time_row.raw)["eventTime"] == "yesterday"
    assert any(q.raw == "{not json" and "JSON" in q.reason for q in rows.values())


@pytest.mark.django_db
def test_a_record_that_is_not_utf8_is_quarantined_with_its_reason():
    good = json.dumps(decrypt(1)).encode()
    text = json.dumps(decrypt(2, user_agent="agent-\u00e9"), ensure_ascii=False)
    broken = text.encode().replace("\u00e9".encode(), b"\xe9")
    counts = ingest_records([good, broken], run=start_run("lookup"))
    assert counts == Counts(records_read=2, events_new=1, quarantined=1)
    row = Quarantine.objects.get()
    assert "UTF-8" in row.reason
    assert "agent-\ufffd" in row.raw


@pytest.mark.django_db
def test_text_beyond_ascii_is_stored_as_it_came_and_the_invalid_utf8_mark_is_quarantined_wherever_it_is():
    context = {"Abteilung": "Größe \U0001f600", "aws:s3:arn": "arn:aws:s3:::bücher/a"}
    kept = decrypt(1, user_agent="agent-é 日本", encryption_context=context)
    marked = decrypt(2, user_agent=f"agent-{INVALID_UTF8_MARK}")  # the mark is its only non-ASCII text
    marked_too = decrypt(3, user_agent=f"agent-é-{INVALID_UTF8_MARK}")
    counts = ingest_records([kept, marked, marked_too], run=start_run("files"))

    assert counts == Counts(records_read=3, events_new=1, quarantined=2)
    event = Event.objects.get()
    assert (event.user_agent, event.encryption_context, event.s3_bucket) == ("agent-é 日本", context, "bücher")
    assert all("invalid UTF-8" in row.reason for row in Quarantine.objects.all())


@pytest.mark.django_db
def test_a_raw_nul_byte_inside_a_string_is_quarantined_and_an_escaped_nul_is_stored_replaced():
    raw_nul = json.dumps(decrypt(1, user_agent="evil")).replace("evil", "ev\x00il")
    escaped_nul = json.dumps(decrypt(2, user_agent="ev\x00il", encryption_context={"k\x00": "v\x00"}))
    counts = ingest_records([raw_nul, escaped_nul, decrypt(3)], run=start_run("lookup"))

    assert counts == Counts(records_read=3, events_new=2, quarantined=1)
    row = Quarantine.objects.get()
    assert "JSON" in row.reason and "\x00" not in row.raw
    event = Event.objects.get(event_id=decrypt(2)["eventID"])
    assert event.user_agent == "ev\ufffdil"
    assert event.encryption_context == {"k\ufffd": "v\ufffd"}
    assert event.raw_record()["userAgent"] == "ev\x00il"  # the evidence is kept as it came


@pytest.mark.django_db
def test_a_record_over_the_size_limit_is_quarantined_with_a_bounded_copy(settings):
    settings.KMSDASH_MAX_RECORD_BYTES = 100_000
    huge = decrypt(1, user_agent="A" * 150_000)
    counts = ingest_records([huge, json.dumps(huge), decrypt(2)], run=start_run("files"))
    assert counts == Counts(records_read=3, events_new=1, quarantined=2)
    for row in Quarantine.objects.all():
        assert "larger than 100000 bytes" in row.reason
        assert row.raw_truncated and len(row.raw) == 64 * 1024


@pytest.mark.django_db
def test_a_deeply_nested_record_is_quarantined():
    nested: dict = {}
    inner = nested
    for _ in range(5000):
        inner["a"] = {}
        inner = inner["a"]
    record = decrypt(1, request_parameters={"keyId": KEY, "deep": nested})
    counts = ingest_records([record, decrypt(2)], run=start_run("files"))
    assert counts == Counts(records_read=2, events_new=1, quarantined=1)


@pytest.mark.django_db
def test_the_ledger_counts_every_outcome_and_the_duration():
    records = [decrypt(1), decrypt(1), {"eventSource": "sts.amazonaws.com"}, "[]", decrypt(2)]
    run = start_run("lookup", account_id=ACCOUNT, region="us-east-1", window_start=T0, window_end=T0)
    ingestor = Ingestor(run, batch_size=2)
    for record in records:
        ingestor.add(record)
    ingestor.flush()
    run.refresh_from_db()
    # The ledger row already shows what each committed batch did.
    assert (run.records_read, run.events_new, run.duplicates, run.ignored, run.quarantined) == (5, 2, 1, 1, 1)
    assert run.status == IngestRun.Status.RUNNING

    finish_run(run, ingestor.counts)
    run.refresh_from_db()
    assert run.status == IngestRun.Status.SUCCEEDED and run.finished_at and run.duration_seconds >= 0
    assert (run.records_read, run.events_new, run.duplicates, run.ignored, run.quarantined) == (5, 2, 1, 1, 1)
    assert (run.account_id, run.region, run.window_start) == (ACCOUNT, "us-east-1", T0)


def test_counts_add_up():
    total = Counts(records_read=2, events_new=1, duplicates=1)
    total += Counts(records_read=3, ignored=1, quarantined=2)
    assert total == Counts(records_read=5, events_new=1, duplicates=1, ignored=1, quarantined=2)
    assert total + Counts(events_new=4) == Counts(records_read=5, events_new=5, duplicates=1, ignored=1, quarantined=2)


@pytest.mark.django_db
def test_a_failing_batch_leaves_no_events_rollups_or_ledger_changes(monkeypatch):
    from audits import ingest

    ingest_records([decrypt(1)], run=start_run("files"))
    run = start_run("files")

    def fail(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(ingest, "insert_quarantine", fail)
    ingestor = Ingestor(run)
    ingestor.add(decrypt(2))
    ingestor.add("not json")
    with pytest.raises(RuntimeError):
        ingestor.flush()
    assert Event.objects.count() == 1 and rollup_total() == 1
    run.refresh_from_db()
    assert run.events_new == 0


@pytest.mark.django_db
def test_a_large_synthetic_set_has_rollups_equal_to_a_group_by_over_events():
    records = list(generate_records(3000, seed=7, start=T0, days=5))
    counts = ingest_records(records + records[::3], run=start_run("files"))
    assert counts.events_new == 3000 and counts.duplicates == 1000
    assert rollup_total() == 3000
    assert stored_rollups() == rollups_as_group_by()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need a server database")
@pytest.mark.django_db(transaction=True)
def test_two_processes_ingesting_overlapping_records_at_once_count_each_event_once():
    records = list(generate_records(4000, seed=3, start=T0, days=2))
    first, second = records[:3000], records[1000:] + records[:500]
    barrier = threading.Barrier(2)
    results: list[Counts] = []
    errors: list[BaseException] = []

    def worker(batch):
        try:
            run = start_run("files")
            ingestor = Ingestor(run, batch_size=250)
            barrier.wait()
            for record in batch:
                ingestor.add(record)
            ingestor.flush()
            results.append(ingestor.counts)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(batch,)) for batch in (first, reversed(second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert sum(c.events_new for c in results) == 4000
    assert sum(c.duplicates for c in results) == len(first) + len(second) - 4000
    assert Event.objects.count() == 4000 and rollup_total() == 4000
    assert stored_rollups() == rollups_as_group_by()
    per_key = Counter(Event.objects.values_list("key", flat=True))
    assert dict(per_key) == dict(DailyRollup.objects.values("key").annotate(n=Sum("count")).values_list("key", "n"))


@pytest.mark.django_db(transaction=True)
def test_background_writes_are_used_only_on_postgresql_outside_a_transaction_and_count_the_same():
    records = list(generate_records(900, seed=5, start=T0, days=2))
    run = start_run("files")
    ingestor = Ingestor(run, batch_size=200, background_writes=True)
    for record in records + records[:150]:
        ingestor.add(record)
    assert (ingestor._writer is not None) == (connection.vendor == "postgresql")
    ingestor.flush()
    assert ingestor._writer is None
    assert ingestor.counts == Counts(records_read=1050, events_new=900, duplicates=150)
    run.refresh_from_db()
    assert (run.records_read, run.events_new, run.duplicates) == (1050, 900, 150)
    assert stored_rollups() == rollups_as_group_by()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_that_ingests_after_its_parent_did_compresses_its_raw_blocks():
    # The parent has started the raw-block compression thread; a child has no threads of its own.
    ingest_records([decrypt(1)], run=start_run("files"))
    pid = os.fork()
    if pid == 0:  # the child: must not hang on a pool whose thread stayed in the parent
        code = 1
        try:
            from audits import ingest, rawcodec

            blob = ingest._compressor().submit(rawcodec.encode_block, [b"{}"]).result(timeout=10)
            code = 0 if rawcodec.decode_block(blob) == [b"{}"] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
