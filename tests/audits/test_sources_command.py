"""`manage.py ingest_cloudtrail`: one synchronous pass, the same code and locks as the tasks."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import boto3
import pytest
from django.core.management import CommandError, call_command

from audits.models import Checkpoint, Event, IngestRun, Source
from audits.synthetic import identity_role, kms_record
from kmsdash.locks import run_lock

pytestmark = [pytest.mark.emulator, pytest.mark.django_db]

ACCOUNT = "123456789012"
REGION = "us-east-1"


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    settings.KMSDASH_LOCK_DIR = tmp_path / "locks"
    settings.KMSDASH_LOOKUP_SETTLE_MINUTES = 0
    settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES = 48 * 60


def record(when, n=0):
    return kms_record(
        event_name="Decrypt",
        event_time=when,
        key_arn=None,
        identity=identity_role(ACCOUNT, "app", "s"),
        region=REGION,
        recipient_account_id=ACCOUNT,
        event_id=f"00000000-0000-4000-8000-{n:012d}",
    )


def ingest(*args):
    out, err = StringIO(), StringIO()
    call_command("ingest_cloudtrail", *args, stdout=out, stderr=err)
    return out.getvalue()


def test_it_reads_lookup_events_and_s3_and_prints_counts_per_scope(aws):
    Source.objects.create(account_id=ACCOUNT, regions=[REGION], s3_bucket="trail-logs")
    now = datetime.now(UTC)
    aws.control("cloudtrail/events", {"records": [record(now - timedelta(minutes=m), m) for m in range(1, 4)]})
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="trail-logs")
    s3.put_object(
        Bucket="trail-logs",
        Key=f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{now:%Y/%m/%d}/f.json.gz",
        Body=gzip.compress(
            json.dumps({"Records": [record(now - timedelta(minutes=m), m) for m in range(2, 6)]}).encode()
        ),
    )

    output = ingest()

    assert f"LookupEvents {ACCOUNT} {REGION}: done, 1 run(s), 3 read, 3 new, 0 duplicate" in output
    assert f"S3 log files {ACCOUNT} {REGION}: done, 1 run(s), 4 read, 2 new, 2 duplicate" in output
    assert Event.objects.count() == 5


def test_source_account_and_region_options_narrow_the_pass(aws):
    Source.objects.create(account_id=ACCOUNT, regions=[REGION, "eu-west-1"], s3_bucket="trail-logs")

    output = ingest("--source", "lookup", "--region", "eu-west-1")

    assert output.splitlines() == [
        f"LookupEvents {ACCOUNT} eu-west-1: done, 1 run(s), 0 read, 0 new, 0 duplicate, 0 ignored, 0 quarantined"
    ]
    assert ingest("--account-id", "999999999999") == "No enabled source matches.\n"


def test_since_and_until_backfill_without_moving_the_checkpoint_back(aws):
    Source.objects.create(account_id=ACCOUNT, regions=[REGION])
    now = datetime.now(UTC)
    aws.control(
        "cloudtrail/events", {"records": [record(now - timedelta(minutes=1), 1), record(now - timedelta(days=5), 2)]}
    )
    ingest("--source", "lookup")
    checkpoint = Checkpoint.objects.get().high_watermark

    ingest(
        "--source",
        "lookup",
        "--since",
        f"{(now - timedelta(days=6)).date()}",
        "--until",
        (now - timedelta(days=4)).isoformat(),
    )

    assert Event.objects.count() == 2
    assert Checkpoint.objects.get().high_watermark == checkpoint


def test_a_held_lock_is_reported_as_skipped(aws):
    Source.objects.create(account_id=ACCOUNT, regions=[REGION])
    with run_lock(f"lookup:{ACCOUNT}:{REGION}"):
        assert ingest("--source", "lookup") == f"LookupEvents {ACCOUNT} {REGION}: skipped\n"
    assert not IngestRun.objects.exists()


def test_a_failing_scope_makes_the_command_fail_after_the_others_ran(aws):
    Source.objects.create(account_id=ACCOUNT, regions=[REGION, "eu-west-1"])
    aws.fault("CloudTrail_20131101.LookupEvents", "AccessDeniedException", count=1)

    with pytest.raises(CommandError, match="1 scope"):
        ingest("--source", "lookup")

    assert list(IngestRun.objects.order_by("id").values_list("status", flat=True)) == ["failed", "succeeded"]


@pytest.mark.parametrize("args", [("--since", "yesterday"), ("--since", "2026-11-02", "--until", "2026-11-01")])
def test_bad_times_are_refused(args):
    with pytest.raises(CommandError):
        ingest(*args)
