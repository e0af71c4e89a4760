"""Events recorded under an alias are re-attributed to the alias's key, rollups merged exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from audits.models import BucketDay, DailyRollup, Event, KeyDay
from inventory import services
from tests.audits.support import grouped_events, stored_summaries, summaries_as_group_by, summary_rows
from tests.inventory.support import MAIN, OTHER, REGION, call, ingest, kms_in, role, source_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.emulator]

WHEN = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def alias_call(alias: str, when: datetime, **kwargs) -> dict:
    """A call that names the key only by alias (no resources[]), as failed calls often do."""
    return call(None, when, request_parameters={"keyId": alias}, **kwargs)


def rollup_table() -> dict:
    return {
        (r.day, r.key, r.operation, r.principal, r.error_code): (r.count, r.first_seen, r.last_seen)
        for r in DailyRollup.objects.all()
    }


def test_alias_name_and_alias_arn_events_move_to_the_key_and_their_rollups_merge(aws):
    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/orders", TargetKeyId=key["KeyId"])
    alias_arn = f"arn:aws:kms:{REGION}:{MAIN}:alias/orders"
    ingest(
        call(key["Arn"], WHEN),  # already attributed: Decrypt by app-backend at 10:00
        alias_call("alias/orders", WHEN - timedelta(hours=2)),  # same rollup dims, earlier
        alias_call(alias_arn, WHEN + timedelta(hours=3)),  # same dims, later
        alias_call("alias/orders", WHEN, event_name="Encrypt"),  # dims the key has no row for yet
    )
    assert Event.objects.filter(key__in=["alias/orders", alias_arn]).count() == 3
    total_before = DailyRollup.objects.aggregate(n=Sum("count"))["n"]

    run = services.ingest_keys(source_for(MAIN), REGION)

    assert run.events_reattributed == 3
    assert set(Event.objects.values_list("key", flat=True)) == {key["Arn"]}
    rows = rollup_table()
    day = WHEN.date()
    principal = f"arn:aws:iam::{MAIN}:role/app-backend"
    assert rows == {
        (day, key["Arn"], "Decrypt", principal, ""): (3, WHEN - timedelta(hours=2), WHEN + timedelta(hours=3)),
        (day, key["Arn"], "Encrypt", principal, ""): (1, WHEN, WHEN),
    }
    assert DailyRollup.objects.aggregate(n=Sum("count"))["n"] == total_before


def test_reattribution_is_idempotent(aws):
    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/orders", TargetKeyId=key["KeyId"])
    ingest(call(key["Arn"], WHEN), alias_call("alias/orders", WHEN))
    source = source_for(MAIN)
    services.ingest_keys(source, REGION)
    after_first = rollup_table()
    run = services.ingest_keys(source, REGION)
    assert run.events_reattributed == 0
    assert rollup_table() == after_first
    assert services.reattribute_aliases() == 0
    assert rollup_table() == after_first


def test_rollups_always_equal_a_group_by_over_events_after_reattribution(aws):
    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/orders", TargetKeyId=key["KeyId"])
    records = []
    for i in range(30):
        when = WHEN - timedelta(days=i % 3, minutes=i)
        records.append(
            alias_call(
                "alias/orders",
                when,
                event_name=("Decrypt", "Encrypt")[i % 2],
                error_code=None if i % 5 else "AccessDeniedException",
            )
        )
        records.append(call(key["Arn"], when, event_name="Decrypt"))
    ingest(*records)
    services.ingest_keys(source_for(MAIN), REGION)

    expected = {
        (row["day"], row["event_name"], row["error_code"]): row["n"]
        for row in Event.objects.annotate(day=TruncDate("event_time"))
        .values("day", "event_name", "error_code")
        .annotate(n=Count("id"))
    }
    actual = {}
    for r in DailyRollup.objects.filter(key=key["Arn"]):
        actual[(r.day, r.operation, r.error_code)] = actual.get((r.day, r.operation, r.error_code), 0) + r.count
    assert actual == expected
    assert not DailyRollup.objects.exclude(key=key["Arn"]).exists()
    assert stored_summaries() == summaries_as_group_by()
    assert set(KeyDay.objects.values_list("key", flat=True)) == {key["Arn"]}


def test_s3_bucket_rows_named_by_alias_move_to_the_key_and_merge(aws):
    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/objects", TargetKeyId=key["KeyId"])
    bucket_object = {"aws:s3:arn": "arn:aws:s3:::orders/2026/a.csv"}
    bucket_only = {"aws:s3:arn": "arn:aws:s3:::orders"}  # a call made with an S3 Bucket Key
    ingest(
        alias_call("alias/objects", WHEN, encryption_context=bucket_object),
        alias_call("alias/objects", WHEN + timedelta(minutes=1), encryption_context=bucket_only),
        call(key["Arn"], WHEN + timedelta(minutes=2), encryption_context=bucket_object),
    )
    services.ingest_keys(source_for(MAIN), REGION)

    assert summary_rows() == grouped_events()
    ((row_key, count, object_calls),) = BucketDay.objects.values_list("key", "count", "object_calls")
    assert (row_key, count, object_calls) == (key["Arn"], 3, 2)


def test_an_alias_name_in_another_account_is_not_taken_for_ours(aws):
    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/orders", TargetKeyId=key["KeyId"])
    # OTHER's own alias/orders (a different key, unknown to the inventory) used in OTHER.
    ingest(alias_call("alias/orders", WHEN, account=OTHER, identity=role(OTHER, "etl")))
    services.ingest_keys(source_for(MAIN), REGION)
    assert Event.objects.get().key == "alias/orders"
    assert DailyRollup.objects.get().key == "alias/orders"


def test_alias_names_prefers_the_shortest_alias(aws):
    from inventory.selectors import alias_names

    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    for name in ("alias/orders-primary", "alias/zz", "alias/ab"):
        kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    services.ingest_keys(source_for(MAIN), REGION)
    assert alias_names()[key["Arn"]] == "alias/ab"
