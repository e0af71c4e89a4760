"""The demo world: what a month of its activity looks like once kmsdash has ingested it."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db.models import Count, Sum

from audits import selectors
from audits.cloudtrail import CRITICAL_EVENT_NAMES, GRANT_OPERATIONS, ROUTINE, critical_class, s3_context_names_object
from audits.filters import Bound, EventFilter
from audits.ingest import ingest_records, start_run
from audits.models import (
    DailyRollup,
    Event,
    IngestRun,
)
from demo.activity import ACCOUNTS, KEYS, REGIONS, generate_activity, placeholder_keys
from demo.seed import backfill_activity, cost_activity, log_files, lookup_records
from tests.audits.support import delete_ingested

# The ingested month is shared by the module (see `ingested`); each test still runs in a transaction.
pytestmark = pytest.mark.django_db

END = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
CRYPTO_OPERATIONS = ("Encrypt", "Decrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncrypt")
LOG_KEY_RE = re.compile(
    r"^AWSLogs/(?P<account>\d{12})/CloudTrail/(?P<region>[a-z0-9-]+)/(?P<date>\d{4}/\d{2}/\d{2})/"
    r"(?P=account)_CloudTrail_(?P=region)_(?P<stamp>\d{8}T\d{4}Z)_[A-Za-z0-9]{16}\.json\.gz$"
)


@pytest.fixture(scope="module")
def month():
    """A whole month at a tenth of the demo's volume: every story, fewer data-plane calls."""
    return generate_activity(placeholder_keys(), end=END, days=30, events_per_day=300, seed=7)


@pytest.fixture(scope="module")
def ingested(month, django_db_setup, django_db_blocker):
    """The month ingested once for the module's read-only tests, and removed afterwards."""
    with django_db_blocker.unblock():
        counts = ingest_records(month, run=start_run(IngestRun.Kind.FILES))
        yield counts
        # Module-scoped data outlives the per-test rollback: remove every table ingestion wrote.
        delete_ingested()


def test_the_world_has_twenty_keys_in_two_accounts_and_three_regions():
    assert len(KEYS) == 20
    assert {spec.account for spec in KEYS} == set(ACCOUNTS) == {"111122223333", "444455556666"}
    assert {spec.region for spec in KEYS} == set(REGIONS)
    assert len({spec.alias for spec in KEYS}) == 20
    for account in ACCOUNTS:
        assert {spec.region for spec in KEYS if spec.account == account} == set(REGIONS)


def test_the_same_seed_gives_the_same_month_and_another_seed_another(month):
    again = generate_activity(placeholder_keys(), end=END, days=30, events_per_day=300, seed=7)
    other = generate_activity(placeholder_keys(), end=END, days=30, events_per_day=300, seed=8)
    assert [r["eventID"] for r in again] == [r["eventID"] for r in month]
    assert [r["eventTime"] for r in again] == [r["eventTime"] for r in month]
    assert [r["eventID"] for r in other] != [r["eventID"] for r in month]


def test_every_record_lies_in_the_month_oldest_first(month):
    times = [r["eventTime"] for r in month]
    assert times == sorted(times)
    assert times[0] >= (END - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert times[-1] < END.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len({r["eventID"] for r in month}) == len(month)


def test_the_ingested_month_covers_every_key_account_and_region(month, ingested):
    assert ingested.events_new == len(month)
    assert ingested.quarantined == ingested.ignored == 0
    used = {key.arn for key in placeholder_keys() if key.spec.share}
    assert len(used) == 19  # and one key nobody touches
    assert set(Event.objects.values_list("key", flat=True).distinct()) == used
    assert set(Event.objects.values_list("recipient_account_id", flat=True).distinct()) == set(ACCOUNTS)
    assert set(Event.objects.values_list("region", flat=True).distinct()) == set(REGIONS)
    # Every day of the month has traffic, and the rollups agree with the events.
    assert Event.objects.dates("event_time", "day").count() == 31
    assert DailyRollup.objects.aggregate(total=Sum("count"))["total"] == len(month)


def test_two_to_three_percent_of_calls_fail_with_real_kms_error_codes(ingested):
    total = Event.objects.count()
    failed = Event.objects.exclude(error_code="").count()
    assert 0.02 <= failed / total <= 0.03
    codes = set(Event.objects.exclude(error_code="").values_list("error_code", flat=True))
    assert codes == {
        "AccessDeniedException",
        "KMSInvalidStateException",
        "DisabledException",
        "IncorrectKeyException",
        "InvalidCiphertextException",
        "ThrottlingException",
        "NotFoundException",
    }


def test_the_month_has_a_rhythm_after_hours_activity_weekends_and_spikes(ingested):
    total = Event.objects.count()
    after_hours = Event.objects.filter(after_hours=True).count()
    assert 0.05 < after_hours / total < 0.4
    per_day = Counter(Event.objects.values_list("event_time__date", flat=True))
    weekdays = [n for day, n in per_day.items() if day.weekday() < 5]
    weekends = [n for day, n in per_day.items() if day.weekday() >= 5]
    assert sum(weekends) / len(weekends) < 0.6 * sum(weekdays) / len(weekdays)
    # The backfill: one key's busiest hour is several times its ordinary busy hours.
    orders = next(k.arn for k in placeholder_keys() if k.spec.alias == "prod-orders-s3")
    per_hour = sorted(
        Counter(Event.objects.filter(key=orders).values_list("event_time__date", "event_time__hour")).values()
    )
    assert per_hour[-1] > 2.5 * per_hour[int(len(per_hour) * 0.9)]


def test_critical_key_events_are_present(ingested):
    names = set(Event.objects.filter(event_name__in=CRITICAL_EVENT_NAMES).values_list("event_name", flat=True))
    assert {
        "ScheduleKeyDeletion",
        "DisableKey",
        "PutKeyPolicy",
        "CreateGrant",
        "CreateKey",
        "CreateAlias",
        "EnableKeyRotation",
        "RetireGrant",
    } <= names
    assert Event.objects.filter(event_name="PutKeyPolicy", principal_type="Root", after_hours=True).exists()


def test_callers_are_roles_users_root_other_accounts_and_aws_services(ingested):
    types = set(Event.objects.values_list("principal_type", flat=True))
    assert {"AssumedRole", "IAMUser", "Root", "AWSAccount", "AWSService"} <= types
    services = set(Event.objects.exclude(service="").values_list("service", flat=True))
    assert {
        "s3.amazonaws.com",
        "dynamodb.amazonaws.com",
        "secretsmanager.amazonaws.com",
        "ec2.amazonaws.com",
        "lambda.amazonaws.com",
    } <= services


def test_cross_account_calls_are_logged_by_both_accounts_under_one_shared_event_id(ingested):
    shared = (
        Event.objects.exclude(shared_event_id="")
        .values("shared_event_id")
        .annotate(copies=Count("id"), accounts=Count("recipient_account_id", distinct=True))
    )
    assert shared.count() > 0
    assert all(row["copies"] == 2 and row["accounts"] == 2 for row in shared)
    owner_copy = Event.objects.filter(principal_type="AWSAccount").first()
    caller_copy = Event.objects.get(shared_event_id=owner_copy.shared_event_id, principal_type="AssumedRole")
    assert owner_copy.key == caller_copy.key
    assert owner_copy.recipient_account_id != caller_copy.recipient_account_id == owner_copy.principal


def test_encryption_contexts_name_buckets_with_and_without_bucket_keys_tables_secrets_and_departments(ingested):
    s3 = Event.objects.exclude(s3_bucket="")
    with_objects = {e.s3_bucket for e in s3 if s3_context_names_object(e.encryption_context)}
    bucket_key = {e.s3_bucket for e in s3 if not s3_context_names_object(e.encryption_context)}
    assert {"prod-orders-archive", "data-lake-raw"} <= with_objects
    assert {"prod-invoices", "prod-apac-backups", "data-eu-lake"} <= bucket_key
    assert Event.objects.filter(encryption_context__has_key="aws:dynamodb:tableName").exists()
    assert Event.objects.filter(encryption_context__has_key="SecretARN").exists()
    assert Event.objects.filter(encryption_context__has_key="aws:ebs:id").exists()
    department = Event.objects.filter(encryption_context__has_key="Department")
    assert department.filter(encryption_context__has_key="DataClassification").exists()
    # Some callers break the convention: no classification at all.
    assert department.exclude(encryption_context__has_key="DataClassification").exists()


def test_a_disabled_key_fails_only_after_it_was_disabled(ingested):
    legacy = next(k.arn for k in placeholder_keys() if k.spec.alias == "prod-legacy-reports")
    disabled_at = Event.objects.get(key=legacy, event_name="DisableKey").event_time
    failures = Event.objects.filter(key=legacy, error_code="DisabledException")
    assert failures.exists()
    assert not failures.filter(event_time__lt=disabled_at).exists()
    # Nothing encrypts or decrypts with it any more (DescribeKey still works on a disabled key).
    assert not Event.objects.filter(
        key=legacy, event_time__gt=disabled_at, error_code="", event_name__in=CRYPTO_OPERATIONS
    ).exists()


def test_a_key_pending_deletion_fails_only_after_its_deletion_was_scheduled(ingested):
    migration = next(k.arn for k in placeholder_keys() if k.spec.alias == "data-old-migration")
    scheduled_at = Event.objects.get(key=migration, event_name="ScheduleKeyDeletion").event_time
    failures = Event.objects.filter(key=migration, error_code="KMSInvalidStateException")
    assert failures.exists()
    assert not failures.filter(event_time__lt=scheduled_at).exists()
    assert not Event.objects.filter(
        key=migration, event_time__gt=scheduled_at, error_code="", event_name__in=CRYPTO_OPERATIONS
    ).exists()


def test_log_files_follow_the_cloudtrail_layout_and_hold_every_record(month):
    now = END + timedelta(minutes=3)
    files = log_files(month, now=now, seed=1)
    seen = []
    for account, key, body in files:
        match = LOG_KEY_RE.match(key)
        assert match, key
        assert match["account"] == account
        delivered = datetime.strptime(match["stamp"], "%Y%m%dT%H%MZ").replace(tzinfo=UTC)
        assert match["date"] == delivered.strftime("%Y/%m/%d")
        assert delivered <= now
        records = json.loads(gzip.decompress(body))["Records"]
        kms = [r for r in records if r["eventSource"] == "kms.amazonaws.com"]
        assert {(r["recipientAccountId"], r["awsRegion"]) for r in records} == {(account, match["region"])}
        # A file holds records written before its delivery (to the minute of its name).
        assert max(r["eventTime"] for r in records) < (delivered + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        seen.extend(r["eventID"] for r in kms)
    assert sorted(seen) == sorted(r["eventID"] for r in month)
    # Like real trails, the files also carry other services' events for kmsdash to skip.
    assert any(
        b'"eventSource":"s3.amazonaws.com"' in gzip.decompress(body)
        or b'"eventSource":"sts.amazonaws.com"' in gzip.decompress(body)
        for _, _, body in files[:50]
    )


def test_lookup_events_get_the_last_two_days_of_management_events_and_failures(month):
    recent = lookup_records(month, now=END)
    since = (END - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert recent
    assert all(r["eventTime"] >= since for r in recent)
    assert all(r["readOnly"] is False or r.get("errorCode") for r in recent)
    expected = [r for r in month if r["eventTime"] >= since and (r["readOnly"] is False or r.get("errorCode"))]
    assert [r["eventID"] for r in recent] == [r["eventID"] for r in expected]


def test_costs_count_each_request_once_for_the_key_owner(month):
    keys = placeholder_keys()
    activity = cost_activity(keys, month)
    owned = {k.arn: k.spec.account for k in keys}
    # Every request in the owner's copy, none of the callers' copies, no KMS service events.
    expected = sum(
        1
        for r in month
        if r.get("resources")
        and owned[r["resources"][0]["ARN"]] == r["recipientAccountId"]
        and r["eventType"] == "AwsApiCall"
    )
    assert sum(e["requests"] + e["asymmetric_requests"] for e in activity.values()) == expected
    assert expected < len(month)
    assert {account for _, account, _ in activity} == set(ACCOUNTS)
    # Sign/Verify on the RSA key are billed as asymmetric requests, in its own account and region.
    signing = next(k for k in keys if k.spec.alias == "data-signing")
    asymmetric = {(a, r) for (_, a, r), e in activity.items() if e["asymmetric_requests"]}
    assert asymmetric == {(signing.spec.account, signing.spec.region)}
    # The key pending deletion is not billed: ap-southeast-2 of the data account bills one key, not two.
    assert {e["keys"] for (_, a, r), e in activity.items() if (a, r) == ("444455556666", "ap-southeast-2")} == {1}


def test_costs_reach_back_to_the_previous_month_a_little_lower(month):
    activity = cost_activity(placeholder_keys(), month)
    first = min(date.fromisoformat(day) for day, _, _ in activity)
    since = date(2026, 10, 1)
    filled = backfill_activity(activity, since=since)
    days = {date.fromisoformat(day) for day, _, _ in filled}
    assert days == {since + timedelta(days=n) for n in range((max(days) - since).days + 1)}
    for (day, account, region), entry in filled.items():
        when = date.fromisoformat(day)
        if when >= first:
            assert entry == activity[(day, account, region)]
            continue
        template = next(
            d for d in sorted(days) if first < d <= first + timedelta(days=7) and d.weekday() == when.weekday()
        )
        assert entry["requests"] == round(activity[(template.isoformat(), account, region)]["requests"] * 0.9)


def test_the_demos_routine_service_grants_stay_off_the_overviews_latest_critical_events(ingested):
    # The reading of the demo: most critical events were autoscaling's grants through EBS,
    # and the deletions and disablings between them were easy to miss.
    since = (END - timedelta(days=29)).date()
    f = EventFilter(since=Bound.of_day(since))
    routine = Event.objects.filter(event_name__in=GRANT_OPERATIONS, event_time__date__gte=since).exclude(service="")
    important = list(selectors.critical_events(f, need=10_000))
    assert routine.count() > 0 and len(important) > 0
    assert selectors.routine_critical_count(f) == routine.count()
    latest = selectors.latest_critical(f)
    assert len(latest) == 10
    assert all(critical_class(e.event_name, e.service) != ROUTINE for e in latest)
    assert [e.pk for e in latest] == [e.pk for e in important[:10]]
    assert {"ScheduleKeyDeletion", "DisableKey"} <= {e.event_name for e in important}
