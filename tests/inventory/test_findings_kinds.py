"""Every finding kind appears exactly where it should and nowhere else (emulator + ingested events)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from audits import synthetic
from inventory import findings, services
from inventory.models import EncryptionContextRule, Finding
from kmsdash import aws as kms_aws
from tests.inventory.support import (
    MAIN,
    OTHER,
    REGION,
    STRANGER,
    call,
    ingest,
    kms_in,
    policy,
    role,
    role_arn,
    root_statement,
    session_in,
    source_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.emulator]

NOW = datetime.now(UTC)


def days_ago(n: float) -> datetime:
    return NOW - timedelta(days=n)


def inventory_and_findings(*accounts: str) -> set[tuple[str, str]]:
    for account in accounts or (MAIN,):
        services.ingest_keys(source_for(account), REGION)
    findings.recompute()
    # Keys made and scheduled for deletion within one test are key churn too (tests/inventory/
    # test_lifecycle_findings.py): not what these tests look at.
    return set(Finding.objects.open().exclude(kind="key-churn").values_list("kind", "key"))


def new_key(kms, *, rotation: bool = True, **kwargs) -> str:
    key = kms.create_key(**kwargs)["KeyMetadata"]
    if (
        rotation
        and kwargs.get("KeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
        and kwargs.get("Origin", "AWS_KMS") == "AWS_KMS"
    ):
        kms.enable_key_rotation(KeyId=key["KeyId"])
    return key["Arn"]


def key_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def allow(principal, action="kms:Decrypt", **extra) -> dict:
    return {"Effect": "Allow", "Principal": principal, "Action": action, "Resource": "*", **extra}


def test_a_healthy_key_has_no_finding(aws):
    kms = kms_in(MAIN)
    arn = new_key(kms)
    kms.put_key_policy(
        KeyId=arn, PolicyName="default", Policy=policy(root_statement(MAIN), allow({"AWS": role_arn(OTHER, "etl")}))
    )
    ingest(call(arn, days_ago(20)), call(arn, days_ago(1)))
    assert inventory_and_findings(MAIN, OTHER) == set()


def test_policy_public_unless_restricted_to_the_organisation(aws):
    kms = kms_in(MAIN)
    public = new_key(kms)
    restricted = new_key(kms)
    kms.put_key_policy(KeyId=public, PolicyName="default", Policy=policy(root_statement(MAIN), allow("*")))
    kms.put_key_policy(
        KeyId=restricted,
        PolicyName="default",
        Policy=policy(
            root_statement(MAIN), allow("*", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}})
        ),
    )
    assert inventory_and_findings() == {("policy-public", public)}
    finding = Finding.objects.get(kind="policy-public")
    assert finding.severity == "critical"
    assert [s["index"] for s in finding.evidence["statements"]] == [1]


def test_policy_wildcard_actions_for_a_role_but_not_for_the_account_root(aws):
    kms = kms_in(MAIN)
    wide = new_key(kms)
    root_only = new_key(kms)
    kms.put_key_policy(
        KeyId=wide,
        PolicyName="default",
        Policy=policy(root_statement(MAIN), allow({"AWS": role_arn(MAIN, "Developer")}, action="kms:*")),
    )
    kms.put_key_policy(KeyId=root_only, PolicyName="default", Policy=policy(root_statement(MAIN)))
    assert inventory_and_findings() == {("policy-wildcard-actions", wide)}
    assert Finding.objects.get().evidence["principals"] == [role_arn(MAIN, "Developer")]


def test_policy_cross_account_marks_whether_the_account_really_uses_the_key(aws):
    kms = kms_in(MAIN)
    idle = new_key(kms)
    busy = new_key(kms)
    for arn in (idle, busy):
        kms.put_key_policy(
            KeyId=arn,
            PolicyName="default",
            Policy=policy(
                root_statement(MAIN),
                allow({"AWS": role_arn(OTHER, "etl")}),  # a configured account: fine
                allow({"AWS": f"arn:aws:iam::{STRANGER}:root"}),
            ),
        )
    ingest(
        call(busy, days_ago(2), identity=role(STRANGER, "partner-app")),
        call(busy, days_ago(1)),
        call(idle, days_ago(1)),
    )
    assert inventory_and_findings(MAIN, OTHER) == {("policy-cross-account", idle), ("policy-cross-account", busy)}
    by_key = {f.key: f for f in Finding.objects.all()}
    assert by_key[idle].subject == STRANGER and by_key[idle].evidence["used"] is False
    assert by_key[busy].evidence["used"] is True
    assert by_key[busy].evidence["usage"][0]["principal"] == role_arn(STRANGER, "partner-app")


def test_grant_cross_account_only_for_grantees_outside_the_configured_accounts(aws):
    kms = kms_in(MAIN)
    arn = new_key(kms)
    kms.create_grant(KeyId=arn, GranteePrincipal=role_arn(OTHER, "etl"), Operations=["Decrypt"], Name="etl")
    foreign = kms.create_grant(
        KeyId=arn, GranteePrincipal=role_arn(STRANGER, "vendor"), Operations=["Decrypt"], Name="vendor"
    )["GrantId"]
    assert inventory_and_findings(MAIN, OTHER) == {("grant-cross-account", arn)}
    finding = Finding.objects.get()
    assert finding.subject == foreign and finding.evidence["grant"]["grantee_principal"] == role_arn(STRANGER, "vendor")


def test_rotation_disabled_only_for_symmetric_customer_keys_with_kms_material(aws):
    kms = kms_in(MAIN)
    off = new_key(kms, rotation=False)
    new_key(kms)  # rotation on
    new_key(kms, rotation=False, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    new_key(kms, rotation=False, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    new_key(kms, rotation=False, Origin="EXTERNAL")
    kms.describe_key(KeyId="alias/aws/ebs")  # an AWS managed key
    assert inventory_and_findings() == {("rotation-disabled", off)}


def test_pending_deletion_in_use_names_the_principals_still_using_the_key(aws):
    kms = kms_in(MAIN)
    used = new_key(kms)
    failed_only = new_key(kms)
    unused = new_key(kms)
    not_scheduled = new_key(kms)
    for arn in (used, failed_only, unused):
        kms.schedule_key_deletion(KeyId=key_id(arn), PendingWindowInDays=7)
    ingest(
        call(used, days_ago(3), identity=role(MAIN, "billing")),
        call(used, days_ago(35), identity=role(MAIN, "billing")),  # outside the 30 days
        call(used, days_ago(40), identity=role(MAIN, "old-job")),  # outside the 30 days
        call(failed_only, days_ago(1), error_code="KMSInvalidStateException"),
        call(not_scheduled, days_ago(1)),
        call(unused, days_ago(1), event_name="DescribeKey"),  # not a use of the key material
    )
    assert inventory_and_findings() == {("pending-deletion-in-use", used)}
    evidence = Finding.objects.exclude(kind="key-churn").get().evidence
    assert [(p["principal"], p["calls"]) for p in evidence["principals"]] == [(role_arn(MAIN, "billing"), 1)]
    assert evidence["deletion_date"]


def test_disabled_key_in_use_lists_the_callers_that_fail(aws):
    kms = kms_in(MAIN)
    called = new_key(kms)
    quiet = new_key(kms)
    for arn in (called, quiet):
        kms.disable_key(KeyId=key_id(arn))
    ingest(
        call(called, days_ago(1), error_code="DisabledException", identity=role(MAIN, "legacy")),
        call(called, days_ago(2), error_code="DisabledException", identity=role(MAIN, "legacy")),
        call(called, days_ago(2), error_code="KMSInvalidStateException", identity=role(MAIN, "cron")),
        call(quiet, days_ago(1), error_code="AccessDeniedException"),
    )
    assert inventory_and_findings() == {("disabled-key-in-use", called)}
    principals = Finding.objects.get().evidence["principals"]
    assert [(p["principal"], p["calls"]) for p in principals] == [
        (role_arn(MAIN, "legacy"), 2),
        (role_arn(MAIN, "cron"), 1),
    ]


def test_kmsdash_s_own_calls_on_a_key_are_no_one_s_use_of_it(aws):
    kms = kms_in(MAIN)
    disabled = new_key(kms)
    kms.disable_key(KeyId=key_id(disabled))
    pending = new_key(kms)
    kms.schedule_key_deletion(KeyId=key_id(pending), PendingWindowInDays=7)
    ours = {"identity": role(MAIN, "kmsdash-reader"), "user_agent": f"Boto3/1.35.0 {kms_aws.USER_AGENT}"}
    ingest(
        call(disabled, days_ago(1), error_code="DisabledException", **ours),
        call(pending, days_ago(1), event_name="Decrypt", **ours),
    )
    assert inventory_and_findings() == set()
    ingest(call(disabled, days_ago(1), error_code="DisabledException", identity=role(MAIN, "legacy")))
    assert inventory_and_findings() == {("disabled-key-in-use", disabled)}


def test_unused_key_after_90_days_by_cloudtrail_and_by_the_last_usage_api(aws):
    kms = kms_in(MAIN)
    idle = new_key(kms)
    used_recently = new_key(kms)
    api_says_used = new_key(kms)
    young = new_key(kms)
    for arn in (idle, used_recently, api_says_used):
        aws.control("kms/key-dates", {"key_arn": arn, "creation_date": days_ago(200).isoformat()})
    aws.control(
        "kms/last-usage", {"key_arn": api_says_used, "operation": "Decrypt", "timestamp": days_ago(5).isoformat()}
    )
    ingest(call(used_recently, days_ago(60)), call(idle, days_ago(120)))
    assert inventory_and_findings() == {("unused-key", idle)}
    assert young  # created today: too young to call unused
    assert Finding.objects.get().evidence["last_used_cloudtrail"].startswith(days_ago(120).date().isoformat())


def test_encryption_context_violations_are_counted_per_principal(aws):
    kms = kms_in(MAIN)
    finance = new_key(kms)
    other = new_key(kms)
    kms.create_alias(AliasName="alias/finance-ledger", TargetKeyId=finance)
    kms.create_alias(AliasName="alias/web", TargetKeyId=other)
    EncryptionContextRule.objects.create(
        name="finance data",
        alias_pattern="alias/finance-*",
        required_keys=["Department", "DataClassification"],
        allowed_values={
            "Department": ["Finance", "HR", "Engineering", "Sales"],
            "DataClassification": ["Public", "Internal", "Confidential", "Restricted"],
        },
    )
    good = {"Department": "Finance", "DataClassification": "Internal"}
    ingest(
        call(finance, days_ago(1), encryption_context=good),
        call(
            finance,
            days_ago(1),
            encryption_context={"Department": "Marketing", "DataClassification": "Internal"},
            identity=role(MAIN, "ad-hoc"),
        ),
        call(finance, days_ago(2), encryption_context={"Department": "Finance"}, identity=role(MAIN, "ad-hoc")),
        call(finance, days_ago(2), identity=role(MAIN, "batch")),  # no context at all
        # Outside the window (and the principals' baseline, so none of them is new).
        call(finance, days_ago(45), identity=role(MAIN, "batch")),
        call(finance, days_ago(45), identity=role(MAIN, "ad-hoc")),
        call(finance, days_ago(45), encryption_context=good),
        call(other, days_ago(1)),  # not covered by the rule
    )
    assert inventory_and_findings() == {("encryption-context-violation", finance)}
    evidence = Finding.objects.get().evidence
    assert evidence["calls"] == 3
    assert [(row["principal"], row["calls"]) for row in evidence["by_principal"]] == [
        (role_arn(MAIN, "ad-hoc"), 2),
        (role_arn(MAIN, "batch"), 1),
    ]
    assert evidence["by_principal"][0]["reasons"] == {"Department not allowed": 1, "missing DataClassification": 1}


def test_trail_excludes_kms_from_selectors_and_from_put_event_selectors_events(aws):
    session = session_in(MAIN)
    session.client("s3", region_name=REGION).create_bucket(Bucket="main-trail-logs")
    trails = session.client("cloudtrail", region_name=REGION)
    for name in ("all-events", "no-kms", "writes-only"):
        trails.create_trail(Name=name, S3BucketName="main-trail-logs")
    trails.put_event_selectors(
        TrailName="no-kms",
        EventSelectors=[
            {
                "ReadWriteType": "All",
                "IncludeManagementEvents": True,
                "ExcludeManagementEventSources": ["kms.amazonaws.com"],
            }
        ],
    )
    trails.put_event_selectors(
        TrailName="writes-only", EventSelectors=[{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True}]
    )
    # A trail in OTHER that the inventory cannot describe, known only from CloudTrail's event history:
    # first made blind to KMS, later (newest wins) the same again after a detour through WriteOnly.
    shadow = f"arn:aws:cloudtrail:{REGION}:{OTHER}:trail/shadow"
    selectors = {
        "excluded": [
            {
                "readWriteType": "All",
                "includeManagementEvents": True,
                "excludeManagementEventSources": ["kms.amazonaws.com"],
            }
        ],
        "fixed": [{"readWriteType": "All", "includeManagementEvents": True, "excludeManagementEventSources": []}],
    }
    records = []
    for days, name, trail in ((1, "excluded", shadow), (3, "fixed", shadow), (2, "fixed", "healed")):
        record = synthetic.kms_record(
            event_name="PutEventSelectors",
            event_time=days_ago(days),
            key_arn=None,
            identity=role(OTHER, "admin"),
            region=REGION,
            recipient_account_id=OTHER,
            request_parameters={"trailName": trail, "eventSelectors": selectors[name]},
            response_elements={
                "trailARN": trail if trail.startswith("arn:") else f"arn:aws:cloudtrail:{REGION}:{OTHER}:trail/{trail}"
            },
        )
        record["eventSource"] = "cloudtrail.amazonaws.com"
        records.append(record)
    aws.control("cloudtrail/events", {"records": records})
    kinds = inventory_and_findings(MAIN, OTHER)
    assert kinds == {("trail-excludes-kms", "")}
    subjects = {f.subject: f.evidence["reasons"] for f in Finding.objects.all()}
    assert subjects == {
        f"arn:aws:cloudtrail:{REGION}:{MAIN}:trail/no-kms": ["excludes kms.amazonaws.com"],
        f"arn:aws:cloudtrail:{REGION}:{MAIN}:trail/writes-only": ["logs only write events"],
        shadow: ["excludes kms.amazonaws.com"],
    }
    assert Finding.objects.get(subject=shadow).evidence["source"] == "PutEventSelectors"


def test_new_principal_only_against_a_baseline(aws):
    kms = kms_in(MAIN)
    established = new_key(kms)
    brand_new_key = new_key(kms)
    ingest(
        call(established, days_ago(20), identity=role(MAIN, "app")),
        call(established, days_ago(1), identity=role(MAIN, "app")),
        call(established, days_ago(2), identity=role(MAIN, "newcomer")),
        call(established, days_ago(1), identity=role(MAIN, "denied"), error_code="AccessDeniedException"),
        call(brand_new_key, days_ago(1), identity=role(MAIN, "app")),
    )
    assert inventory_and_findings() == {("new-principal", established)}
    assert Finding.objects.get().subject == role_arn(MAIN, "newcomer")


def test_aws_managed_keys_are_not_judged(aws):
    kms = kms_in(MAIN)
    managed = kms.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]["Arn"]
    kms.put_key_policy(KeyId=managed, PolicyName="default", Policy=policy(allow("*", action="kms:*")))
    aws.control("kms/key-dates", {"key_arn": managed, "creation_date": days_ago(400).isoformat()})
    ingest(call(managed, days_ago(20), identity=role(MAIN, "a")), call(managed, days_ago(1), identity=role(MAIN, "b")))
    assert inventory_and_findings() == set()


def test_a_finding_that_stops_holding_is_resolved_and_kept_and_can_come_back(aws):
    kms = kms_in(MAIN)
    arn = new_key(kms, rotation=False)
    assert inventory_and_findings() == {("rotation-disabled", arn)}
    first = Finding.objects.get()

    kms.enable_key_rotation(KeyId=arn)
    assert inventory_and_findings() == set()
    first.refresh_from_db()
    assert first.resolved_at is not None and first.status == "resolved"
    assert findings.recompute() == {"opened": 0, "held": 0, "resolved": 0}

    kms.disable_key_rotation(KeyId=arn)
    assert inventory_and_findings() == {("rotation-disabled", arn)}
    assert Finding.objects.count() == 1


def test_an_accepted_finding_stays_accepted_while_it_holds(aws, django_user_model):
    kms = kms_in(MAIN)
    new_key(kms, rotation=False)
    inventory_and_findings()
    admin = django_user_model.objects.create_user("boss")
    services.accept_finding(Finding.objects.get(), user=admin, reason="legacy key, retiring in Q1")
    findings.recompute()
    finding = Finding.objects.get()
    assert finding.status == "accepted" and finding.accepted_by == admin
    assert not Finding.objects.open().exists()
