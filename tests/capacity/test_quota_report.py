"""The per-minute request-quota summary and quota_report: a planted burst is named exactly."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command

from audits.cloudtrail import parse_record
from audits.ingest import ingest_records, start_run
from audits.models import QuotaMinute
from audits.synthetic import identity_account, identity_role, identity_service, kms_record
from capacity import selectors
from inventory.models import Key

ACCOUNT = "111122223333"
OTHER = "444455556666"
REGION = "eu-west-1"
BURST_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/11111111-1111-4111-8111-111111111111"
QUIET_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/22222222-2222-4222-8222-222222222222"
BURST_MINUTE = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
QUOTA = 20  # requests/s, overridden: 85% of it is 17/s, 1,020 calls in one minute
BURST_CALLS = 1020
THROTTLED = 30


def record(n: int, when: datetime, *, key: str = BURST_KEY, role: str = "batch", **overrides) -> dict:
    values: dict[str, Any] = dict(
        event_name="Decrypt",
        event_time=when,
        key_arn=key,
        identity=identity_role(ACCOUNT, role, "s1"),
        region=REGION,
        recipient_account_id=ACCOUNT,
        event_id=f"00000000-0000-4000-8000-{n:012d}",
    )
    values.update(overrides)
    return kms_record(**values)


def burst_records() -> list[dict]:
    """1,020 calls in one minute (30 of them throttled), and a quiet key before and after."""
    records = [
        record(
            n,
            BURST_MINUTE + timedelta(seconds=n % 60),
            error_code="ThrottlingException" if n < THROTTLED else None,
            error_message="You have exceeded the rate at which you may call KMS." if n < THROTTLED else None,
        )
        for n in range(BURST_CALLS)
    ]
    for i in range(1, 6):
        for m in (BURST_MINUTE - timedelta(minutes=i), BURST_MINUTE + timedelta(minutes=i)):
            records.append(record(len(records), m, key=QUIET_KEY, role="web", event_name="GenerateDataKey"))
    # The quiet key also appears in the burst minute, below the burst key.
    records += [record(len(records) + i, BURST_MINUTE, key=QUIET_KEY, role="web") for i in range(3)]
    return records


@pytest.fixture
def quota_override(settings):
    settings.KMSDASH_KMS_QUOTAS = {(ACCOUNT, REGION, "symmetric"): float(QUOTA)}


def ingest(records: list[dict]) -> None:
    ingest_records(records, run=start_run("files"))


def report(*args: str) -> dict:
    out = io.StringIO()
    call_command("quota_report", "--format", "json", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.django_db
def test_quota_report_names_the_burst_minute_its_rate_the_quota_and_the_top_key(quota_override):
    ingest(burst_records())

    data = report("--since", "2026-11-20", "--until", "2026-11-20")

    (scope,) = data["scopes"]
    assert set(scope) == {
        "account",
        "region",
        "class",
        "quota",
        "peak_rate",
        "peak_minute",
        "throttled",
        "top_keys",
        "top_principals",
    }
    assert (scope["account"], scope["region"], scope["class"]) == (ACCOUNT, REGION, "symmetric")
    assert scope["quota"] == 20.0
    assert scope["peak_rate"] == round((BURST_CALLS + 3) / 60, 1) == 17.1
    assert scope["peak_rate"] / scope["quota"] >= 0.85
    assert scope["peak_minute"] == "2026-11-20T10:15:00Z"
    assert scope["throttled"] == THROTTLED
    assert scope["top_keys"][0] == {"key": BURST_KEY, "calls": BURST_CALLS, "rate": 17.0}
    assert scope["top_keys"][1]["key"] == QUIET_KEY
    assert scope["top_principals"][0]["principal"] == f"arn:aws:iam::{ACCOUNT}:role/batch"


@pytest.mark.django_db
def test_the_throttled_calls_are_counted_in_the_minute_they_happened(quota_override):
    ingest(burst_records())

    minute = QuotaMinute.objects.get(minute=BURST_MINUTE, quota_class="symmetric")
    assert (minute.calls, minute.throttled) == (BURST_CALLS + 3, THROTTLED)
    assert selectors.throttled_per_minute(None, None) == {(ACCOUNT, REGION): [(BURST_MINUTE, THROTTLED)]}


@pytest.mark.django_db
def test_reingesting_the_same_records_does_not_double_the_per_minute_counts(quota_override):
    records = burst_records()
    ingest(records)
    before = sorted(QuotaMinute.objects.values_list("minute", "quota_class", "calls", "throttled"))
    first_report = report()

    ingest(records)
    ingest(records[::-1][:500] + records[:10])

    assert sorted(QuotaMinute.objects.values_list("minute", "quota_class", "calls", "throttled")) == before
    assert report() == first_report
    assert sum(row[2] for row in before) == len(records)


@pytest.mark.django_db
def test_the_window_and_scope_options_narrow_the_report(quota_override):
    ingest(burst_records())

    assert report("--since", "2026-11-21")["scopes"] == []
    # Before the burst every minute has one call: a tie goes to the earliest minute.
    assert report("--until", "2026-11-20T10:14:59Z")["scopes"][0]["peak_minute"] == "2026-11-20T10:10:00Z"
    assert report("--account-id", OTHER)["scopes"] == []
    assert report("--region", "us-east-1")["scopes"] == []
    assert len(report("--region", REGION)["scopes"]) == 1


@pytest.mark.django_db
def test_the_default_quota_applies_without_an_override():
    ingest(burst_records())

    (scope,) = report()["scopes"]
    assert scope["quota"] == 100_000.0  # eu-west-1's published symmetric default


@pytest.mark.django_db
def test_the_csv_report_has_one_row_per_scope_with_hostile_text_neutralised(quota_override):
    hostile = '=HYPERLINK("http://evil")'
    ingest(
        [
            record(n, BURST_MINUTE, identity=identity_service(hostile), key=BURST_KEY, recipient_account_id=ACCOUNT)
            for n in range(5)
        ]
    )
    out = io.StringIO()
    call_command("quota_report", "--format", "csv", stdout=out)

    header, row = list(csv.reader(io.StringIO(out.getvalue())))
    assert header[:7] == ["account", "region", "class", "quota", "peak_rate", "peak_minute", "throttled"]
    assert row[:7] == [ACCOUNT, REGION, "symmetric", "20.0", "0.1", "2026-11-20T10:15:00Z", "0"]
    assert row[8].startswith("'=HYPERLINK")


def classed(**overrides) -> str:
    return parse_record(record(1, BURST_MINUTE, **overrides)).quota_class


def test_each_operation_and_algorithm_falls_in_its_quota_class():
    assert classed() == "symmetric"
    assert classed(event_name="GenerateMac", request_parameters={"macAlgorithm": "HMAC_SHA_256"}) == "symmetric"
    assert classed(event_name="Decrypt", request_parameters={"encryptionAlgorithm": "RSAES_OAEP_SHA_256"}) == "rsa"
    assert classed(event_name="Sign", request_parameters={"signingAlgorithm": "RSASSA_PSS_SHA_256"}) == "rsa"
    assert classed(event_name="Verify", request_parameters={"signingAlgorithm": "ECDSA_SHA_256"}) == "ecc"
    assert classed(event_name="Sign", request_parameters={"signingAlgorithm": "SM2DSA"}) == "ecc"
    assert classed(event_name="DeriveSharedSecret") == "ecc"
    assert classed(event_name="GenerateRandom", key=None, request_parameters={"customKeyStoreId": "cks-1"}) == (
        "custom-key-store"
    )
    assert classed(event_name="GenerateDataKeyPair", request_parameters={"keyPairSpec": "RSA_2048"}) == (
        "GenerateDataKeyPair RSA_2048"
    )
    assert classed(event_name="DescribeKey") == "DescribeKey"
    assert classed(event_name="ListAliases", key=None) == "ListAliases"
    assert classed(event_name="PutKeyPolicy") == ""


def test_failed_calls_count_and_other_accounts_calls_and_aws_owned_keys_do_not():
    assert classed(error_code="AccessDeniedException") == "symmetric"
    # The key owner's copy of another account's call: that account is throttled, not this one.
    assert classed(identity=identity_account(OTHER)) == ""
    # The caller's own copy of a call on another account's key counts against the caller.
    assert classed(recipient_account_id=OTHER, identity=identity_role(OTHER, "app", "s1")) == "symmetric"
    # An AWS service using a key of another account than the trail's: an AWS owned key.
    aws_owned = f"arn:aws:kms:{REGION}:999988887777:key/33333333-3333-4333-8333-333333333333"
    assert classed(identity=identity_service("dynamodb.amazonaws.com"), key=aws_owned) == ""
    assert classed(identity=identity_service("dynamodb.amazonaws.com")) == "symmetric"


@pytest.mark.django_db
def test_calls_on_a_key_in_a_custom_key_store_count_against_that_quota_too(quota_override):
    Key.objects.create(
        arn=BURST_KEY,
        key_id=BURST_KEY.rsplit("/", 1)[1],
        account_id=ACCOUNT,
        region=REGION,
        key_spec="SYMMETRIC_DEFAULT",
        origin="AWS_CLOUDHSM",
        last_seen_at=BURST_MINUTE,
    )
    ingest(burst_records())

    scopes = {scope["class"]: scope for scope in report()["scopes"]}
    assert set(scopes) == {"symmetric", "custom-key-store"}
    assert scopes["custom-key-store"]["quota"] == 1800.0
    assert scopes["custom-key-store"]["peak_rate"] == 17.0
    assert scopes["custom-key-store"]["throttled"] == THROTTLED
    assert [k["key"] for k in scopes["custom-key-store"]["top_keys"]] == [BURST_KEY]


@pytest.mark.django_db
def test_the_migration_classes_existing_events_from_their_raw_records_and_fills_the_summary(quota_override):
    from importlib import import_module

    from django.apps import apps
    from django.db import connection

    from audits.models import Event

    ingest(burst_records())
    kept = sorted(
        QuotaMinute.objects.values_list("minute", "account_id", "region", "quota_class", "calls", "throttled")
    )
    Event.objects.update(quota_class="")
    QuotaMinute.objects.all().delete()

    class Editor:  # what the backfill uses of a schema editor (SQLite's refuses to open inside a test transaction)
        def __init__(self):
            self.connection = connection

        def execute(self, sql, params=None):
            with connection.cursor() as cursor:
                cursor.execute(sql, params)

    import_module("audits.migrations.0021_quota_minutes").backfill(apps, Editor())

    rebuilt = QuotaMinute.objects.values_list("minute", "account_id", "region", "quota_class", "calls", "throttled")
    assert sorted(rebuilt) == kept
    assert report() != {"scopes": []}
