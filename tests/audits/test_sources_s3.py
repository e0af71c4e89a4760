"""S3 trail log files against the emulator over real HTTP: layout, ledger, late files, bad files."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest
from django.db import connection
from django.db.models import Sum

from audits.models import Checkpoint, DailyRollup, Event, IngestRun, ProcessedObject, Quarantine, Source
from audits.services import run_scope
from audits.synthetic import identity_role, kms_record

pytestmark = [pytest.mark.emulator, pytest.mark.django_db]

ACCOUNT = "111122223333"
REGION = "us-east-1"
BUCKET = "org-trail-logs"


@pytest.fixture(autouse=True)
def _s3_settings(settings, tmp_path):
    settings.KMSDASH_LOCK_DIR = tmp_path / "locks"
    settings.KMSDASH_S3_LOOKBACK_DAYS = 2
    settings.KMSDASH_S3_INITIAL_DAYS = 1
    settings.KMSDASH_OBJECT_ATTEMPTS = 3
    settings.KMSDASH_LOOKUP_SETTLE_MINUTES = 0
    return settings


@pytest.fixture
def s3(aws):
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def source(db):
    return Source.objects.create(account_id=ACCOUNT, regions=[REGION], s3_bucket=BUCKET, lookup_enabled=False)


def today() -> date:
    return datetime.now(UTC).date()


def make_records(n, *, day=None, account=ACCOUNT, region=REGION, seed=0):
    day = day or today()
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    return [
        kms_record(
            event_name=("Decrypt", "GenerateDataKey")[i % 2],
            event_time=start + timedelta(minutes=7 * i + seed),
            key_arn=f"arn:aws:kms:{region}:{account}:key/{i % 2:08d}-0000-4000-8000-000000000000",
            identity=identity_role(account, "app", "s"),
            region=region,
            recipient_account_id=account,
        )
        for i in range(n)
    ]


def log_key(day, *, account=ACCOUNT, region=REGION, folder="CloudTrail", org="", prefix=""):
    head = f"{prefix}/" if prefix else ""
    org = f"{org}/" if org else ""
    stamp = f"{day:%Y%m%d}T{uuid.uuid4().int % 24:02d}00Z"
    return (
        f"{head}AWSLogs/{org}{account}/{folder}/{region}/{day:%Y/%m/%d}/"
        f"{account}_{folder}_{region}_{stamp}_{uuid.uuid4().hex[:16]}.json.gz"
    )


def put_log(s3, key, records):
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(json.dumps({"Records": records}).encode()))
    return key


def object_gets(aws, key=None):
    return [
        r
        for r in aws.requests()
        if r["target"].startswith(f"s3:GET /{BUCKET}/") and (key is None or r["target"].endswith(key))
    ]


def expected(records):
    return Counter((r["eventTime"][:10], r["eventName"]) for r in records)


def stored():
    rows = DailyRollup.objects.values("day", "operation").annotate(n=Sum("count"))
    return Counter({(row["day"].isoformat(), row["operation"]): row["n"] for row in rows if row["n"]})


def test_log_files_of_the_window_are_read_and_counted_exactly(aws, s3, source):
    yesterday = today() - timedelta(days=1)
    fed = [make_records(40, day=today()), make_records(25, day=yesterday), make_records(10, day=yesterday, seed=3)]
    put_log(s3, log_key(today()), fed[0])
    put_log(s3, log_key(yesterday), fed[1])
    put_log(s3, log_key(yesterday), fed[2])

    result = run_scope("s3", ACCOUNT, REGION)

    everything = [r for batch in fed for r in batch]
    assert result.status == "done"
    assert Event.objects.count() == 75
    assert stored() == expected(everything)
    run = IngestRun.objects.get(kind="s3")
    assert (run.status, run.files, run.events_new) == ("succeeded", 3, 75)
    assert ProcessedObject.objects.count() == 3
    assert Checkpoint.objects.filter(kind="s3", account_id=ACCOUNT, region=REGION).exists()


def test_a_rerun_skips_processed_objects(aws, s3, source):
    put_log(s3, log_key(today()), make_records(5))
    run_scope("s3", ACCOUNT, REGION)
    assert len(object_gets(aws)) == 1

    run_scope("s3", ACCOUNT, REGION)

    assert len(object_gets(aws)) == 1
    assert IngestRun.objects.order_by("-id").first().records_read == 0
    assert Event.objects.count() == 5


def test_a_late_file_for_two_days_ago_is_picked_up_by_the_next_run(aws, s3, source):
    put_log(s3, log_key(today()), make_records(3))
    run_scope("s3", ACCOUNT, REGION)
    late = make_records(4, day=today() - timedelta(days=2))
    put_log(s3, log_key(today() - timedelta(days=2)), late)
    too_late = put_log(s3, log_key(today() - timedelta(days=4)), make_records(2, day=today() - timedelta(days=4)))

    run_scope("s3", ACCOUNT, REGION)

    assert Event.objects.count() == 7
    assert Event.objects.filter(event_id__in=[r["eventID"] for r in late]).count() == 4
    # Beyond the look-back: a backfill with --since reaches it.
    assert object_gets(aws, too_late) == []
    run_scope("s3", ACCOUNT, REGION, since=datetime.now(UTC) - timedelta(days=5))
    assert Event.objects.count() == 9


def test_a_changed_etag_is_read_again_without_double_counting(aws, s3, source):
    key = log_key(today())
    first = make_records(5)
    put_log(s3, key, first)
    run_scope("s3", ACCOUNT, REGION)
    extra = make_records(1, seed=1000)
    put_log(s3, key, first + extra)

    run_scope("s3", ACCOUNT, REGION)

    assert Event.objects.count() == 6
    assert stored() == expected(first + extra)
    assert ProcessedObject.objects.filter(key=key).count() == 2
    second = IngestRun.objects.order_by("-id").first()
    assert (second.events_new, second.duplicates) == (1, 5)


def test_the_same_event_redelivered_in_another_object_is_stored_once(aws, s3, source):
    fed = make_records(10)
    put_log(s3, log_key(today()), fed[:7])
    put_log(s3, log_key(today()), fed[4:])

    run_scope("s3", ACCOUNT, REGION)

    assert Event.objects.count() == 10
    assert stored() == expected(fed)
    assert IngestRun.objects.get().duplicates == 3


def test_a_truncated_gzip_is_quarantined_after_retries_while_other_files_land(aws, s3, source):
    good = make_records(6)
    put_log(s3, log_key(today()), good)
    whole = gzip.compress(json.dumps({"Records": make_records(50, seed=500)}).encode())
    bad = log_key(today())
    s3.put_object(Bucket=BUCKET, Key=bad, Body=whole[: len(whole) // 2])

    result = run_scope("s3", ACCOUNT, REGION)

    assert result.status == "done"
    assert len(object_gets(aws, bad)) == 3
    assert Event.objects.filter(event_id__in=[r["eventID"] for r in good]).count() == 6
    assert not ProcessedObject.objects.filter(key=bad).exists()
    quarantined = Quarantine.objects.get(reason__startswith="Unreadable")
    assert bad in quarantined.location and "truncated" in quarantined.reason
    assert ProcessedObject.objects.count() == 1

    run_scope("s3", ACCOUNT, REGION)  # given up on: not read again until the object changes
    assert len(object_gets(aws, bad)) == 3
    assert Quarantine.objects.filter(reason__startswith="Unreadable").count() == 1


def test_a_decompression_bomb_is_quarantined_and_memory_stays_bounded(aws, s3, source, settings):
    settings.KMSDASH_MAX_DECOMPRESSED_BYTES = 1024 * 1024
    bomb = gzip.compress(b'{"Records": [{"userAgent": "' + b"A" * (50 * 1024 * 1024) + b'"}]}')
    assert len(bomb) < 100 * 1024
    key = log_key(today())
    s3.put_object(Bucket=BUCKET, Key=key, Body=bomb)
    put_log(s3, log_key(today()), make_records(2))

    run_scope("s3", ACCOUNT, REGION)

    assert "limit" in Quarantine.objects.get(reason__startswith="Unreadable").reason
    assert Event.objects.count() == 2


def test_an_object_over_the_size_limit_is_quarantined_without_being_read(aws, s3, source, settings):
    settings.KMSDASH_MAX_COMPRESSED_BYTES = 100
    key = put_log(s3, log_key(today()), make_records(20))

    run_scope("s3", ACCOUNT, REGION)

    assert object_gets(aws, key) == []
    assert Quarantine.objects.filter(reason__contains="over the 100-byte limit").count() == 1


def test_malformed_records_are_quarantined_and_the_rest_of_the_file_lands(aws, s3, source):
    good = make_records(3)
    no_id = make_records(1, seed=99)[0]
    del no_id["eventID"]
    other_service = good[0] | {"eventSource": "s3.amazonaws.com", "eventID": str(uuid.uuid4())}
    key = put_log(s3, log_key(today()), [*good, no_id, other_service, "not an object"])

    run_scope("s3", ACCOUNT, REGION)

    assert Event.objects.count() == 3
    run = IngestRun.objects.get()
    assert (run.records_read, run.events_new, run.ignored, run.quarantined) == (6, 3, 1, 2)
    assert Quarantine.objects.filter(location__contains=key).count() == 2
    assert ProcessedObject.objects.filter(key=key).exists()


def test_digest_and_insight_folders_and_other_accounts_are_not_read(aws, s3, source):
    put_log(s3, log_key(today(), folder="CloudTrail-Digest"), make_records(2))
    put_log(s3, log_key(today(), folder="CloudTrail-Insight"), make_records(2))
    put_log(s3, log_key(today(), account="444455556666"), make_records(2, account="444455556666"))
    put_log(s3, log_key(today(), region="eu-west-1"), make_records(2, region="eu-west-1"))
    put_log(s3, log_key(today()), make_records(1))

    run_scope("s3", ACCOUNT, REGION)

    assert len(object_gets(aws)) == 1
    assert Event.objects.count() == 1
    assert not Quarantine.objects.exists()


def test_an_organization_trail_under_a_prefix_is_read(aws, s3, source):
    Source.objects.filter(pk=source.pk).update(org_id="o-a1b2c3d4e5", s3_prefix="trails/prod")
    fed = make_records(8)
    put_log(s3, log_key(today(), org="o-a1b2c3d4e5", prefix="trails/prod"), fed)
    put_log(s3, log_key(today()), make_records(3, seed=40))  # not the organization layout

    run_scope("s3", ACCOUNT, REGION)

    assert set(Event.objects.values_list("event_id", flat=True)) == {r["eventID"] for r in fed}


def test_the_same_event_from_lookup_events_and_s3_is_stored_once(aws, s3):
    # The emulator serves LookupEvents to the caller's account: use its default one for both paths.
    account = "123456789012"
    Source.objects.create(account_id=account, regions=[REGION], s3_bucket=BUCKET)
    now = datetime.now(UTC)
    fed = [
        r | {"eventTime": (now - timedelta(minutes=i + 1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        for i, r in enumerate(make_records(30, account=account))
    ]
    put_log(s3, log_key(now.date(), account=account), fed)
    aws.control("cloudtrail/events", {"records": fed})

    run_scope("lookup", account, REGION)
    run_scope("s3", account, REGION)

    assert Event.objects.count() == 30
    assert stored() == expected(fed)
    s3_run = IngestRun.objects.get(kind="s3")
    assert (s3_run.events_new, s3_run.duplicates) == (0, 30)


def test_the_next_objects_are_downloaded_while_one_is_read(aws, s3, source):
    keys = [put_log(s3, log_key(today()), make_records(3, seed=n)) for n in range(6)]
    # Every log-file GET waits a second before it is answered: one at a time, the first 4 GETs
    # would arrive a second or more apart.
    aws.fault(".json.gz", error="", delay=1.0, count=100)

    run_scope("s3", ACCOUNT, REGION)

    arrivals = sorted(r["time"] for r in object_gets(aws))
    assert len(arrivals) == len(keys)
    assert arrivals[3] - arrivals[0] < 0.9  # PREFETCH (4) downloads were under way together
    assert Event.objects.count() == 18 and ProcessedObject.objects.count() == 6


@pytest.mark.django_db(transaction=True)
def test_an_object_is_marked_processed_only_in_the_transaction_that_commits_its_last_records(aws, s3, source, settings):
    settings.KMSDASH_INGEST_BATCH_SIZE = 4  # each object spans several batches
    first, second = sorted([log_key(today()), log_key(today())])  # listed, so read, in this order
    put_log(s3, first, make_records(6))
    poisoned = make_records(6, seed=1)
    poisoned[5]["eventID"] = "poison"
    put_log(s3, second, poisoned)
    # The database refuses the second object's last record, in whichever batch it travels.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.event_id = 'poison' THEN RAISE EXCEPTION 'poison'; END IF; RETURN NEW; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON audits_event FOR EACH ROW "
                "EXECUTE FUNCTION refuse_poison()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON audits_event WHEN NEW.event_id = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'poison'); END"
            )
    try:
        with pytest.raises(Exception, match="poison"):
            run_scope("s3", ACCOUNT, REGION)
        done = set(ProcessedObject.objects.values_list("key", flat=True))
        assert second not in done  # its last records never committed, so neither did its ledger row
        assert done <= {first}
        assert not Event.objects.filter(event_id="poison").exists()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER refuse_poison" + (" ON audits_event" if connection.vendor == "postgresql" else "")
            )
            if connection.vendor == "postgresql":
                cursor.execute("DROP FUNCTION refuse_poison()")

    run_scope("s3", ACCOUNT, REGION)  # the next pass reads the second object again, whole
    assert set(ProcessedObject.objects.values_list("key", flat=True)) == {first, second}
    assert Event.objects.count() == 12


def test_a_record_no_parser_reads_is_quarantined_alone_and_the_object_is_marked_processed(aws, s3, source):
    # A 4,000-digit number (read exactly by Python's json) and a NaN (read by no JSON parser) used to
    # end the object there: the records after them were lost and the object was read again every pass.
    recs = make_records(6, seed=40)
    items = [json.dumps(r).encode() for r in recs]
    items[1] = items[1][:-1] + b', "n": ' + b"7" * 4000 + b"}"
    items[3] = items[3][:-1] + b', "ratio": NaN}'
    key = log_key(today())
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(b'{"Records": [' + b", ".join(items) + b"]}"))

    run_scope("s3", ACCOUNT, REGION)

    assert set(Event.objects.values_list("event_id", flat=True)) == {r["eventID"] for i, r in enumerate(recs) if i != 3}
    quarantined = Quarantine.objects.get()
    assert key in quarantined.location and "NaN is not JSON" in quarantined.reason
    assert ProcessedObject.objects.get(key=key).records == 6
    run = IngestRun.objects.get()
    assert (run.status, run.files, run.records_read, run.events_new, run.quarantined) == ("succeeded", 1, 6, 5, 1)

    run_scope("s3", ACCOUNT, REGION)
    assert len(object_gets(aws, key)) == 1
