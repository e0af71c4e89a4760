"""The ingestion sources under faults that once broke a promise: an unreadable object among good
ones, truncated files, bad records re-read, failed passes, and windows busier than a task can read."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import zlib
from datetime import UTC, datetime, timedelta

import boto3
import ijson
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection

from audits.models import Event, IngestRun, ProcessedObject, Quarantine, Source
from audits.services import run_scope
from audits.sources import lookup
from audits.sources.files import FileError, iter_file_records
from audits.synthetic import identity_role, kms_record
from tests.support import manage_py

pytestmark = [pytest.mark.emulator, pytest.mark.django_db]

LOOKUP_ACCOUNT = "123456789012"  # the emulator's default account: LookupEvents answers it
S3_ACCOUNT = "111122223333"
REGION = "us-east-1"
BUCKET = "org-trail-logs"


@pytest.fixture(autouse=True)
def _source_settings(settings, tmp_path):
    settings.KMSDASH_LOCK_DIR = tmp_path / "locks"
    settings.KMSDASH_LOOKUP_OVERLAP_MINUTES = 15
    settings.KMSDASH_LOOKUP_SETTLE_MINUTES = 0
    settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES = 60
    settings.KMSDASH_LOOKUP_INITIAL_DAYS = 1
    settings.KMSDASH_S3_LOOKBACK_DAYS = 2
    settings.KMSDASH_S3_INITIAL_DAYS = 1
    settings.KMSDASH_OBJECT_ATTEMPTS = 3
    return settings


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def records(n, *, end, spacing=timedelta(seconds=5), account=LOOKUP_ACCOUNT):
    """n KMS records, newest at `end`, `spacing` apart."""
    return [
        kms_record(
            event_name="Decrypt",
            event_time=end - i * spacing,
            key_arn=f"arn:aws:kms:{REGION}:{account}:key/00000000-0000-4000-8000-000000000000",
            identity=identity_role(account, "app", "s"),
            region=REGION,
            recipient_account_id=account,
        )
        for i in range(n)
    ]


def malformed(record):
    return record | {"userIdentity": "not an object"}


# -- LookupEvents ----------------------------------------------------------------------------------


@pytest.fixture
def lookup_source(db):
    return Source.objects.create(account_id=LOOKUP_ACCOUNT, regions=[REGION])


def test_a_window_cut_by_the_soft_time_limit_is_read_whole_by_shorter_windows_later(aws, lookup_source, monkeypatch):
    # A task's soft time limit (1440 s) at 2 requests/s reads at most 2,880 pages of 50 events: a
    # 60-minute window holding more (40 KMS calls/s) is cut short on every tick, and the next tick
    # plans the same window again. Scaled down here to 4 pages a tick and a window of 8 pages.
    pages_per_tick = 4
    read_window = lookup.read_window

    def time_limited(cloudtrail, window, **kwargs):
        for n, page in enumerate(read_window(cloudtrail, window, **kwargs)):
            if n == pages_per_tick:
                raise SoftTimeLimitExceeded()
            yield page

    monkeypatch.setattr(lookup, "read_window", time_limited)
    first_window_end = now() - timedelta(days=1) + timedelta(minutes=60)
    fed = records(400, end=first_window_end - timedelta(minutes=1))
    aws.control("cloudtrail/events", {"records": fed})

    for _ in range(6):  # scheduled ticks
        with contextlib.suppress(SoftTimeLimitExceeded):
            run_scope("lookup", LOOKUP_ACCOUNT, REGION)

    assert Event.objects.count() == len(fed)


def test_a_window_busier_than_a_task_reads_is_cut_short_and_later_windows_shrink_until_all_is_read(
    aws, lookup_source, settings
):
    # 4 pages a task (soft limit x 2 requests/s x 0.8); the first hour holds 8 pages.
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 2.5
    first_window_end = now() - timedelta(days=1) + timedelta(minutes=60)
    fed = records(400, end=first_window_end - timedelta(minutes=1), spacing=timedelta(seconds=4))
    aws.control("cloudtrail/events", {"records": fed})

    for _ in range(8):  # scheduled ticks
        run_scope("lookup", LOOKUP_ACCOUNT, REGION)

    assert Event.objects.count() == len(fed)
    runs = IngestRun.objects.filter(kind="lookup").order_by("id")
    assert runs[0].error.startswith("Cut short after 4 pages") and runs[0].events_new == 200
    lengths = [(run.window_end - run.window_start).total_seconds() / 60 for run in runs]
    assert lengths[:2] == [60, 30] and min(lengths) >= 20  # the overlap (15) and 5 minutes of progress
    assert max(run.pages for run in runs) <= 4
    assert len(aws.requests("LookupEvents")) == sum(run.pages for run in runs)  # no page requested past a budget


def test_settings_refuse_a_lookup_window_no_longer_than_its_overlap():
    result = manage_py("check", KMSDASH_LOOKUP_MAX_WINDOW_MINUTES="15")
    assert result.returncode != 0
    assert "KMSDASH_LOOKUP_MAX_WINDOW_MINUTES must be longer than KMSDASH_LOOKUP_OVERLAP_MINUTES" in result.stderr


def test_a_malformed_record_re_read_in_the_overlap_is_quarantined_once(aws, lookup_source, settings):
    settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES = 48 * 60
    fed = records(3, end=now() - timedelta(minutes=2))
    fed[1] = malformed(fed[1])
    aws.control("cloudtrail/events", {"records": fed})

    run_scope("lookup", LOOKUP_ACCOUNT, REGION)
    run_scope("lookup", LOOKUP_ACCOUNT, REGION)  # the next 5-minute tick re-reads the 15-minute overlap

    assert Event.objects.count() == 2
    assert Quarantine.objects.count() == 1
    assert sum(IngestRun.objects.values_list("quarantined", flat=True)) == 1


# -- S3 log files ----------------------------------------------------------------------------------


@pytest.fixture
def s3(aws):
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def s3_source(db):
    return Source.objects.create(account_id=S3_ACCOUNT, regions=[REGION], s3_bucket=BUCKET, lookup_enabled=False)


def log_key(name: str) -> str:
    day = datetime.now(UTC).date()
    return f"AWSLogs/{S3_ACCOUNT}/CloudTrail/{REGION}/{day:%Y/%m/%d}/{S3_ACCOUNT}_CloudTrail_{REGION}_{name}.json.gz"


def s3_records(n, seed=0):
    return records(n, end=now() - timedelta(minutes=1 + seed), account=S3_ACCOUNT, spacing=timedelta(seconds=7))


def gz(recs) -> bytes:
    return gzip.compress(json.dumps({"Records": recs}).encode())


@pytest.mark.parametrize("unreadable", ["archived", "forbidden"])
def test_one_log_file_that_cannot_be_got_does_not_stop_the_others(aws, s3, s3_source, unreadable):
    bad, good = log_key("20000101T0000Z_aaaa"), log_key("20000101T0005Z_bbbb")  # listed, so read, in this order
    good_records = s3_records(6)
    if unreadable == "archived":  # a lifecycle rule moved it to Glacier: GetObject says InvalidObjectState
        s3.put_object(Bucket=BUCKET, Key=bad, Body=gz(s3_records(3, seed=30)), StorageClass="GLACIER")
    else:  # e.g. encrypted under a KMS key the reader's role may not use: AccessDenied
        s3.put_object(Bucket=BUCKET, Key=bad, Body=gz(s3_records(3, seed=30)))
        aws.fault(bad, error="AccessDenied", status=403, count=1000)
    s3.put_object(Bucket=BUCKET, Key=good, Body=gz(good_records))

    errors = []
    for _ in range(2):  # and the next pass fails the same way
        try:
            run_scope("s3", S3_ACCOUNT, REGION)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    assert Event.objects.filter(event_id__in=[r["eventID"] for r in good_records]).count() == 6, errors
    assert ProcessedObject.objects.filter(key=good).exists()


def test_the_bad_records_of_a_truncated_file_are_quarantined_once(aws, s3, s3_source):
    recs = s3_records(2000)  # large enough that the reader yields records before the cut
    recs[1] = malformed(recs[1])
    whole = gz(recs)
    s3.put_object(Bucket=BUCKET, Key=log_key("20000101T0000Z_cccc"), Body=whole[: len(whole) * 2 // 3])

    run_scope("s3", S3_ACCOUNT, REGION)  # the file is read KMSDASH_OBJECT_ATTEMPTS (3) times

    record_rows = Quarantine.objects.exclude(reason__startswith="Unreadable")
    assert record_rows.count() == 1


def readable(data: bytes) -> list[str]:
    """The event ids of the whole records in the part of a truncated gzip that decompresses."""
    text = zlib.decompressobj(wbits=31).decompress(data)
    ids = []
    with contextlib.suppress(ijson.JSONError):
        for item in ijson.items(io.BytesIO(text), "Records.item"):
            ids.append(item["eventID"])
    return ids


def test_a_small_truncated_gzip_yields_its_readable_records_before_the_error():
    body = gz(s3_records(20))
    cut = body[: len(body) * 3 // 4]
    got = []
    with pytest.raises(FileError, match="truncated"):
        for record in iter_file_records(io.BytesIO(cut), name="cut.json.gz"):
            got.append(record["eventID"])
    assert readable(cut)  # there is something to yield
    assert got == readable(cut)


def test_the_readable_records_of_a_truncated_log_file_land(aws, s3, s3_source):
    body = gz(s3_records(20))
    cut = body[: len(body) * 3 // 4]
    s3.put_object(Bucket=BUCKET, Key=log_key("20000101T0000Z_eeee"), Body=cut)

    run_scope("s3", S3_ACCOUNT, REGION)

    assert Quarantine.objects.filter(reason__contains="truncated").count() == 1
    assert sorted(Event.objects.values_list("event_id", flat=True)) == sorted(readable(cut))


@pytest.mark.django_db(transaction=True)
def test_a_failed_pass_records_only_the_quarantine_rows_it_committed(aws, s3, s3_source):
    recs = s3_records(4)
    recs[0] = malformed(recs[0])
    recs[3]["eventID"] = "poison"
    s3.put_object(Bucket=BUCKET, Key=log_key("20000101T0000Z_dddd"), Body=gz(recs))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION review_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.event_id = 'poison' THEN RAISE EXCEPTION 'poison'; END IF; RETURN NEW; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER review_poison BEFORE INSERT ON audits_event FOR EACH ROW "
                "EXECUTE FUNCTION review_poison()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER review_poison BEFORE INSERT ON audits_event WHEN NEW.event_id = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'poison'); END"
            )
    try:
        with pytest.raises(Exception, match="poison"):
            run_scope("s3", S3_ACCOUNT, REGION)
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("DROP TRIGGER review_poison ON audits_event")
                cursor.execute("DROP FUNCTION review_poison()")
            else:
                cursor.execute("DROP TRIGGER review_poison")

    run = IngestRun.objects.get(kind="s3")
    assert run.status == "failed"
    assert run.quarantined == Quarantine.objects.filter(run=run).count()
