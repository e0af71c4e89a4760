"""Lifecycle findings: replica policy drift, imported key material expiry, the on-demand rotation
budget and key churn, each raised on the key meant for it and not on its near miss."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory import findings, services
from inventory.models import Finding
from tests.inventory.support import MAIN, REGION, call, ingest, kms_in, policy, root_statement, source_for

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC)
EU = "eu-west-1"


def recompute_kinds(*kinds: str) -> list[Finding]:
    findings.recompute()
    return list(Finding.objects.open().filter(kind__in=kinds).order_by("key", "subject"))


def backdate(aws, arn: str, days: float) -> None:
    aws.control("kms/key-dates", {"key_arn": arn, "creation_date": (NOW - timedelta(days=days)).isoformat()})


def multi_region_pair(replica_policy: str) -> tuple[str, str]:
    primary = kms_in(MAIN).create_key(MultiRegion=True, Policy=policy(root_statement(MAIN)))["KeyMetadata"]
    replica = kms_in(MAIN).replicate_key(KeyId=primary["KeyId"], ReplicaRegion=EU)["ReplicaKeyMetadata"]
    kms_in(MAIN, EU).put_key_policy(KeyId=replica["KeyId"], PolicyName="default", Policy=replica_policy)
    source = source_for(MAIN, regions=[REGION, EU])
    services.ingest_keys(source, REGION)
    services.ingest_keys(source, EU)
    return primary["Arn"], replica["Arn"]


def test_a_replica_whose_policy_differs_from_its_primarys_is_a_finding(aws):
    extra = {
        "Sid": "Replica only",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{MAIN}:role/eu-app"},
        "Action": "kms:Decrypt",
        "Resource": "*",
    }
    primary, replica = multi_region_pair(policy(root_statement(MAIN), extra))
    (found,) = recompute_kinds("replica-policy-drift")
    assert (found.key, found.subject, found.region) == (primary, replica, REGION)
    assert found.evidence["only_in_replica"] == [extra] and found.evidence["only_in_primary"] == []


def test_a_replica_policy_differing_only_in_layout_and_order_is_not_drift(aws):
    same = root_statement(MAIN)
    reordered = {k: ([same[k]] if k == "Action" else same[k]) for k in reversed(list(same))}
    multi_region_pair(json.dumps({"Statement": [reordered], "Version": "2012-10-17"}, indent=4))
    assert recompute_kinds("replica-policy-drift") == []


def imported_key(aws, valid_to: datetime | None) -> str:
    arn = kms_in(MAIN).create_key(Origin="EXTERNAL")["KeyMetadata"]["Arn"]
    aws.control("kms/key-material", {"key_arn": arn, "valid_to": valid_to.isoformat() if valid_to else None})
    return arn


def test_imported_key_material_expiring_within_30_days_or_expired_is_a_finding(aws):
    expiring = imported_key(aws, NOW + timedelta(days=10))
    expired = imported_key(aws, NOW - timedelta(days=1))
    later = imported_key(aws, NOW + timedelta(days=60))
    never = imported_key(aws, None)
    services.ingest_keys(source_for(MAIN), REGION)
    found = {(f.kind, f.key) for f in recompute_kinds("key-material-expiring", "key-material-expired")}
    assert found == {("key-material-expiring", expiring), ("key-material-expired", expired)}
    assert later not in {k for _, k in found} and never not in {k for _, k in found}
    (soon,) = Finding.objects.filter(kind="key-material-expiring")
    assert soon.evidence["expiration_model"] == "KEY_MATERIAL_EXPIRES" and soon.evidence["days_left"] in (9, 10)


def rotated_key(times: int) -> str:
    kms = kms_in(MAIN)
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    for _ in range(times):
        kms.rotate_key_on_demand(KeyId=arn.rsplit("/", 1)[1])
    return arn


def test_a_key_that_used_8_of_its_10_on_demand_rotations_is_a_finding(aws):
    eight = rotated_key(8)
    rotated_key(7)
    services.ingest_keys(source_for(MAIN), REGION)
    (found,) = recompute_kinds("rotation-on-demand-budget")
    assert found.key == eight
    assert found.evidence == {"on_demand_rotations": 8, "limit": 10, "left": 2}


def test_keys_created_and_scheduled_for_deletion_within_30_days_are_counted_per_month_with_their_cost(aws):
    kms = kms_in(MAIN)
    churned = kms.create_key()["KeyMetadata"]
    backdate(aws, churned["Arn"], 10)
    kept_longer = kms.create_key()["KeyMetadata"]
    backdate(aws, kept_longer["Arn"], 45)
    for key in (churned, kept_longer):
        kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    services.ingest_keys(source_for(MAIN), REGION)  # first seen pending deletion now

    (found,) = recompute_kinds("key-churn")
    month = f"{NOW - timedelta(days=10):%Y-%m}"
    assert (found.subject, found.account_id, found.key) == (f"{MAIN}:{month}", MAIN, "")
    assert found.evidence["keys"] == 1 and [r["key"] for r in found.evidence["churned"]] == [churned["Arn"]]
    assert found.evidence["churned"][0]["days"] in (9, 10)
    # About ten days of a $1 key-month.
    assert Decimal("0.28") <= Decimal(found.evidence["cost"]) <= Decimal("0.36")


def test_the_scheduling_time_comes_from_cloudtrail_when_it_has_the_call(aws):
    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    backdate(aws, key["Arn"], 60)
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=30)
    # The inventory first sees it pending now (60 days after creation), CloudTrail 50 days ago.
    ingest(call(key["Arn"], NOW - timedelta(days=50), event_name="ScheduleKeyDeletion"))
    services.ingest_keys(source_for(MAIN), REGION)
    (found,) = recompute_kinds("key-churn")
    assert found.evidence["churned"][0]["days"] in (9, 10)


def test_no_churn_when_keys_live_longer_than_30_days(aws):
    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    backdate(aws, key["Arn"], 31)
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    services.ingest_keys(source_for(MAIN), REGION)
    assert recompute_kinds("key-churn") == []
