"""`manage.py kms_report`: figures from the rollups, checked against counts made from the raw records."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.core.management import CommandError, call_command

from audits.ingest import ingest_records, start_run
from audits.models import Event
from audits.report import kms_report
from audits.synthetic import generate_records, identity_service, kms_record

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def report(*args) -> dict:
    out = io.StringIO()
    call_command("kms_report", "--format", "json", *args, stdout=out)
    return json.loads(out.getvalue())


def principal_by_the_rules(identity: dict) -> str:
    kind = identity.get("type")
    if kind == "AssumedRole":
        return identity["sessionContext"]["sessionIssuer"]["arn"]
    if kind == "IAMUser":
        return identity["arn"]
    if kind == "AWSAccount":
        return identity["accountId"]
    return identity.get("invokedBy", "")


def expected_report(records: list, since: date | None = None, until: date | None = None) -> dict:
    """The report computed straight from the raw records: KMS only, once per (account, eventID)."""
    seen = set()
    totals: Counter[str] = Counter()
    keys: dict[str, dict] = {}
    for record in records:
        if not isinstance(record, dict) or record.get("eventSource") != "kms.amazonaws.com":
            continue
        if record.get("_malformed"):
            continue
        identity = (record["recipientAccountId"], record["eventID"])
        if identity in seen:
            continue
        seen.add(identity)
        when = datetime.strptime(record["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if (since and when.date() < since) or (until and when.date() > until):
            continue
        failed = "errorCode" in record
        after_hours = not time(6) <= when.time() < time(23)
        totals.update(events=1, failed=int(failed), after_hours=int(after_hours))
        key = next((r["ARN"] for r in record.get("resources", []) if r.get("type") == "AWS::KMS::Key"), "")
        if not key:
            continue
        item = keys.setdefault(
            key,
            {
                "key": key,
                "events": 0,
                "operations": Counter(),
                "principals": set(),
                "services": set(),
                "failed": 0,
                "after_hours": 0,
            },
        )
        item["events"] += 1
        item["operations"][record["eventName"]] += 1
        principal = principal_by_the_rules(record["userIdentity"])
        if principal:
            item["principals"].add(principal)
        if record["userIdentity"].get("invokedBy"):
            item["services"].add(record["userIdentity"]["invokedBy"])
        item["failed"] += failed
        item["after_hours"] += after_hours
    rows = [
        {
            **item,
            "operations": dict(sorted(item["operations"].items())),
            "principals": sorted(item["principals"]),
            "services": sorted(item["services"]),
        }
        for item in keys.values()
    ]
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "totals": {**{k: totals[k] for k in ("events", "failed", "after_hours")}, "keys": len(rows)},
        "keys": sorted(rows, key=lambda item: (-item["events"], item["key"])),
    }


def messy_record_set(seed: int = 11) -> list:
    """KMS records with duplicates, keyless events, other services' records and malformed ones, shuffled."""
    rng = random.Random(seed)
    records: list = list(generate_records(1500, seed=seed, start=T0, days=6))
    for n in range(20):  # keyless: GenerateRandom names no key
        records.append(
            kms_record(
                event_name="GenerateRandom",
                event_time=T0 + timedelta(hours=5 * n),
                key_arn=None,
                identity=identity_service("ec2.amazonaws.com"),
                region="us-east-1",
                recipient_account_id="111122223333",
            )
        )
    records += rng.sample(records, 300)  # duplicates
    for n in range(30):
        records.append(
            {
                "eventSource": "s3.amazonaws.com",
                "eventName": "GetObject",
                "eventID": f"s3-{n}",
                "eventTime": "2026-03-03T00:00:00Z",
                "recipientAccountId": "111122223333",
            }
        )
    for n, victim in enumerate(rng.sample(records[:1500], 25)):
        broken = json.loads(json.dumps(victim))
        broken["eventID"] = f"broken-{n}"
        broken["eventTime"] = ["not", "a", "time"] if n % 2 else "2026-13-45T99:00:00Z"
        broken["_malformed"] = True
        records.append(broken)
    records.append("{truncated json")
    rng.shuffle(records)
    return records


@pytest.fixture
def utc_business_hours(settings):
    settings.KMSDASH_TIME_ZONE = "UTC"
    settings.KMSDASH_BUSINESS_HOURS = (time(6), time(23))
    settings.KMSDASH_WEEKENDS_AFTER_HOURS = False
    # Small batches, so that duplicates also meet across batches and not only within one.
    settings.KMSDASH_INGEST_BATCH_SIZE = 200


@pytest.mark.django_db
def test_the_report_matches_figures_counted_independently_from_the_raw_records(utc_business_hours):
    records = messy_record_set()
    counts = ingest_records(records, run=start_run("files"))
    assert (counts.ignored, counts.quarantined) == (30, 26)

    assert report() == expected_report(records)
    assert report()["totals"]["events"] == Event.objects.count() == 1520


@pytest.mark.django_db
def test_the_report_range_is_inclusive_utc_days_and_date_times_are_truncated(utc_business_hours):
    records = messy_record_set(seed=5)
    ingest_records(records, run=start_run("files"))
    since, until = date(2026, 3, 3), date(2026, 3, 5)

    expected = expected_report(records, since, until)
    assert report("--since", "2026-03-03", "--until", "2026-03-05") == expected
    assert report("--since", "2026-03-03T23:59:00Z", "--until", "2026-03-05T00:00:01+00:00") == expected
    # A date-time with an offset is taken in UTC first: 01:00+02:00 is the previous UTC day.
    assert report("--since", "2026-03-04T01:00:00+02:00")["since"] == "2026-03-03"


@pytest.mark.django_db
def test_the_report_filters_by_account_region_and_key(utc_business_hours):
    records = list(generate_records(600, seed=2, start=T0, days=3))
    ingest_records(records, run=start_run("files"))
    account, region = "444455556666", "eu-west-1"
    subset = [r for r in records if r["recipientAccountId"] == account and r["awsRegion"] == region]
    assert report("--account-id", account, "--region", region) == expected_report(subset)

    key = subset[0]["resources"][0]["ARN"]
    only_key = report("--key", key)
    assert [item["key"] for item in only_key["keys"]] == [key]
    assert only_key["totals"]["events"] == sum(1 for r in records if r["resources"][0]["ARN"] == key)


@pytest.mark.django_db
def test_the_csv_report_has_one_neutralized_row_per_key(utc_business_hours):
    key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    evil = {"type": "AWSService", "invokedBy": '=HYPERLINK("http://x")'}
    records = [
        kms_record(
            event_name="Decrypt",
            event_time=T0 + timedelta(hours=h),
            key_arn=key,
            identity=evil,
            region="us-east-1",
            recipient_account_id="111122223333",
        )
        for h in (8, 9)
    ]
    ingest_records(records, run=start_run("files"))
    out = io.StringIO()
    call_command("kms_report", "--format", "csv", stdout=out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["key", "events", "failed", "after_hours", "operations", "principals", "services"]
    assert rows[1][:5] == [key, "2", "0", "0", "Decrypt=2"]
    assert rows[1][5] == rows[1][6] == '\'=HYPERLINK("http://x")'
    assert len(rows) == 2


@pytest.mark.django_db
def test_an_empty_range_reports_zeros():
    assert kms_report(since="2030-01-01", until="2030-01-31") == {
        "since": "2030-01-01",
        "until": "2030-01-31",
        "totals": {"events": 0, "failed": 0, "after_hours": 0, "keys": 0},
        "keys": [],
    }


@pytest.mark.django_db
@pytest.mark.parametrize("args", [["--since", "yesterday"], ["--since", "2026-03-05", "--until", "2026-03-01"]])
def test_bad_dates_are_refused(args):
    with pytest.raises(CommandError):
        call_command("kms_report", *args, stdout=io.StringIO())


def test_expected_report_helper_dedupes_and_skips_non_kms():
    # Guards the independent oracle itself against silently counting nothing.
    records = messy_record_set()
    expected = expected_report(records)
    assert expected["totals"]["events"] == 1520
    assert sum(item["events"] for item in expected["keys"]) == 1500
