"""The S3 bucket summary (BucketDay): kept by the write path, backfilled by its migration, read by the
Bucket Key savings finder instead of events."""

from __future__ import annotations

import importlib
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext

from audits.cloudtrail import s3_context_names_object
from audits.ingest import Ingestor, start_run
from audits.models import BucketDay, Event, IngestRun
from audits.rollups import S3_OBJECT_SQL
from audits.synthetic import identity_role, kms_record
from costs import savings
from costs.prices import prices
from tests.audits.support import grouped_events, summary_rows

pytestmark = pytest.mark.django_db

A, B = "111122223333", "444455556666"
KEY_A = f"arn:aws:kms:us-east-1:{A}:key/11111111-1111-1111-1111-111111111111"
KEY_B = f"arn:aws:kms:eu-west-1:{B}:key/22222222-2222-2222-2222-222222222222"
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)

# aws:s3:arn values and whether they name an object (audits.cloudtrail.s3_context_names_object).
TRICKY_ARNS = {
    "arn:aws:s3:::plain/reports/a.csv": True,
    "arn:aws:s3:::bucket-key-on": False,
    "arn:aws:s3:::trailing-slash/": True,
    "arn:aws-cn:s3:::china/o": True,
    "arn:aws:S3:::upper/x:s3:::lower": False,  # the '/' is before the first ':s3:::'; LIKE on SQLite ignores case
    "arn:aws/x:s3:::slash-before": False,
    "arn:aws:s3:::twice:s3:::b/o": True,
    "arn:aws:s3:::wild%_card": False,  # LIKE's wildcards in the value, not in the pattern
    "arn:aws:s3:::wild%_card2/o": True,
    "arn:aws:s3:::new\nline": False,
    "arn:aws:s3:::new\nline2/o": True,
    "arn:aws:s3:::back\\slash": False,
    "arn:aws:s3:::back\\slash2/o": True,
    "arn:aws:s3:::nul\x00/o": True,  # stored with U+FFFD in place of the NUL
    "arn:aws:s3:::bücket/ö": True,
}


def record(when, *, context=None, account=A, key=KEY_A, region="us-east-1", event_id=None):
    identity = identity_role(account, "app", "AWSService", invoked_by="s3.amazonaws.com")
    return kms_record(
        event_name="Decrypt",
        event_time=when,
        key_arn=key,
        identity=identity,
        region=region,
        recipient_account_id=account,
        encryption_context=context,
        event_id=event_id,
    )


def s3_record(arn, when, **kwargs):
    return record(when, context={"aws:s3:arn": arn}, **kwargs)


def ingest(records, *, batch_size=None):
    ingestor = Ingestor(start_run(IngestRun.Kind.FILES), batch_size=batch_size)
    for item in records:
        ingestor.add(item)
    ingestor.flush()
    return ingestor.counts


def varied_records() -> list[dict]:
    records = []
    for n, arn in enumerate(TRICKY_ARNS):
        records += [s3_record(arn, NOON + timedelta(minutes=n)) for _ in range(n % 3 + 1)]
    # Around UTC midnight, in another account, region and key; with and without Bucket Keys.
    midnight = datetime(2026, 11, 21, tzinfo=UTC)
    for when in (midnight - timedelta(seconds=1), midnight, midnight + timedelta(hours=5)):
        records.append(s3_record("arn:aws:s3:::shared/o", when, account=B, key=KEY_B, region="eu-west-1"))
        records.append(s3_record("arn:aws:s3:::shared", when, account=B, key=KEY_B, region="eu-west-1"))
    # No bucket: no context, another kind of context, an ARN that is not an S3 ARN.
    records.append(record(NOON))
    records.append(record(NOON, context={"tenant": "t-1", "other": "arn:aws:s3:::not-this/o"}))
    records.append(s3_record("s3://looks-like/a-bucket", NOON))
    return records


def test_the_summary_equals_a_group_by_over_events_after_any_ingestion_duplicates_included():
    records = varied_records()
    first = ingest(records[:20], batch_size=7)
    assert first.events_new == 20
    assert summary_rows() == grouped_events()
    # Everything again, in other batches, with duplicates inside a batch too: only new events count.
    again = ingest(records + records[25:30], batch_size=11)
    assert again.events_new == len(records) - 20 and again.duplicates == 20 + 5
    rows = summary_rows()
    assert rows == grouped_events()
    assert sum(count for count, _, _, _ in rows.values()) == Event.objects.exclude(s3_bucket="").count()
    assert not BucketDay.objects.filter(s3_bucket="").exists()  # events naming no bucket are left out


def test_object_calls_follow_s3_context_names_object_for_tricky_contexts():
    ingest([s3_record(arn, NOON) for arn in TRICKY_ARNS])
    by_bucket = {row.s3_bucket: row.object_calls for row in BucketDay.objects.all()}
    stored = {event.s3_bucket: event.encryption_context for event in Event.objects.all()}
    assert len(by_bucket) == len(TRICKY_ARNS)
    assert by_bucket == {bucket: int(s3_context_names_object(context)) for bucket, context in stored.items()}
    assert sorted(by_bucket.values()) == sorted(int(names) for names in TRICKY_ARNS.values())


def test_the_backfill_migration_gives_what_ingestion_gave():
    ingest(varied_records(), batch_size=9)
    ingested = summary_rows()
    backfill = importlib.import_module("audits.migrations.0010_backfill_bucketday")
    BucketDay.objects.all().delete()
    # Not entered as a context: SQLite's would refuse inside the test's transaction; execute() suffices.
    backfill.backfill(None, connection.schema_editor())
    assert summary_rows() == ingested
    assert ingested == grouped_events()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the write path's SQL condition is PostgreSQL's")
def test_the_write_paths_sql_condition_matches_s3_context_names_object_on_every_event():
    ingest(varied_records())
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT event_id, COALESCE({S3_OBJECT_SQL}, false) FROM audits_event")
        in_sql = dict(cursor.fetchall())
    in_python = {e.event_id: s3_context_names_object(e.encryption_context) for e in Event.objects.all()}
    assert in_sql == in_python and any(in_sql.values()) and not all(in_sql.values())


def bucket_keys_from_events(end: date, *, window_days: int = savings.BUCKET_WINDOW_DAYS):
    """The savings finder as it was before the summary: a scan of the window's events."""
    since = datetime.combine(end - timedelta(days=window_days - 1), time.min, tzinfo=UTC)
    until = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
    events = Event.objects.filter(event_time__gte=since, event_time__lt=until).exclude(s3_bucket="")
    ranked = events.values("s3_bucket").annotate(n=Count("id")).order_by("-n", "s3_bucket")[: savings.BUCKET_LIMIT]
    unit = prices()["symmetric"]
    results = []
    for row in ranked:
        sample = (
            events.filter(s3_bucket=row["s3_bucket"])
            .order_by("-event_time")
            .values_list("encryption_context", flat=True)[:25]
        )
        names_objects = any(s3_context_names_object(context) for context in sample)
        monthly = Decimal(row["n"]) * savings.DAYS_PER_MONTH / window_days
        saving = (monthly * unit * savings.BUCKET_KEY_SAVING).quantize(Decimal("0.01")) if names_objects else Decimal(0)
        cost = (monthly * unit).quantize(Decimal("0.01"))
        results.append(savings.BucketSaving(row["s3_bucket"], row["n"], names_objects, int(monthly), cost, saving))
    return sorted(results, key=lambda b: (-b.monthly_saving, -b.requests, b.bucket))


def savings_world() -> list[dict]:
    """25 buckets (more than the finder lists), ties, both kinds, and events just outside the window."""
    end = date(2026, 11, 20)
    records = []
    for n in range(25):
        bucket = f"bucket-{n:02d}"
        arn = f"arn:aws:s3:::{bucket}" if n % 3 == 0 else f"arn:aws:s3:::{bucket}/data/{n}.json"
        for i in range(10 + (n * 7) % 13):  # some counts tie
            day = end - timedelta(days=i % savings.BUCKET_WINDOW_DAYS)
            account, key, region = (A, KEY_A, "us-east-1") if i % 2 else (B, KEY_B, "eu-west-1")
            records.append(
                s3_record(arn, datetime.combine(day, time(i % 24), tzinfo=UTC), account=account, key=key, region=region)
            )
    first_day = datetime.combine(end - timedelta(days=savings.BUCKET_WINDOW_DAYS - 1), time.min, tzinfo=UTC)
    for when in (first_day - timedelta(microseconds=1), first_day + timedelta(days=savings.BUCKET_WINDOW_DAYS)):
        records += [s3_record("arn:aws:s3:::outside/o", when) for _ in range(50)]
    records += [s3_record("arn:aws:s3:::bucket-00", first_day)] * 3  # the window's first instant; duplicates
    records += [record(datetime.combine(end, time(9), tzinfo=UTC)) for _ in range(40)]  # no bucket
    return records


def test_bucket_keys_gives_what_the_event_scan_gave():
    ingest(savings_world(), batch_size=50)
    end = date(2026, 11, 20)
    found = savings.bucket_keys(end)
    assert len(found) == savings.BUCKET_LIMIT
    assert "outside" not in {b.bucket for b in found}
    assert {b.names_objects for b in found} == {True, False}
    assert found == bucket_keys_from_events(end)
    assert savings.bucket_keys(end, window_days=3) == bucket_keys_from_events(end, window_days=3)
    later = end + timedelta(days=savings.BUCKET_WINDOW_DAYS)
    assert savings.bucket_keys(later) == bucket_keys_from_events(later) and savings.bucket_keys(later)


def test_bucket_keys_reads_no_events():
    ingest(savings_world(), batch_size=50)
    with CaptureQueriesContext(connection) as queries:
        found = savings.bucket_keys(date(2026, 11, 20))
    assert found and queries.captured_queries
    assert not [q["sql"] for q in queries.captured_queries if "audits_event" in q["sql"]]
    assert Counter("audits_bucketday" in q["sql"] for q in queries.captured_queries)[True] == 1
