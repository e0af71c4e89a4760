""" "Safe to delete?": one key per verdict, the evidence behind it, read from the emulator over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from inventory import retirement, services
from inventory.models import KeyReference, ReferenceCheck
from tests.inventory.support import MAIN, REGION, call, ingest, kms_in, root_statement, session_in, source_for

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC)


def new_key(aws, *, days_old: int = 200, alias: str = "", **create) -> str:
    kms = kms_in(MAIN, create.pop("region", REGION))
    meta = kms.create_key(**create)["KeyMetadata"]
    if alias:
        kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    created = (NOW - timedelta(days=days_old)).isoformat()
    aws.control("kms/key-dates", {"key_arn": meta["Arn"], "creation_date": created})
    return meta["Arn"]


def hold_cloudtrail_since(days: int, region: str = REGION) -> None:
    """kmsdash holds CloudTrail data for the account and region from `days` ago (another key's call)."""
    other = f"arn:aws:kms:{region}:{MAIN}:key/00000000-0000-0000-0000-000000000000"
    ingest(call(other, NOW - timedelta(days=days), region=region))


def read_all(regions=(REGION,)) -> None:
    source = source_for(MAIN, regions=list(regions))
    for region in regions:
        services.ingest_keys(source, region)
        services.refresh_references(source, region)


def verdict_of(arn: str) -> retirement.Verdict:
    return next(v for v in retirement.verdicts() if v.key == arn)


def test_a_key_used_this_week_is_in_use(aws):
    arn = new_key(aws)
    hold_cloudtrail_since(120)
    ingest(call(arn, NOW - timedelta(days=2), event_name="GenerateDataKey"))
    read_all()
    v = verdict_of(arn)
    assert v.verdict == "in-use"
    assert v.evidence["last_use"]["cloudtrail"]["operation"] == "GenerateDataKey"


def test_a_key_last_used_a_month_ago_is_recently_used_and_failed_calls_do_not_count(aws):
    arn = new_key(aws)
    hold_cloudtrail_since(120)
    ingest(
        call(arn, NOW - timedelta(days=30)),
        call(arn, NOW - timedelta(days=1), error_code="AccessDeniedException"),
    )
    read_all()
    v = verdict_of(arn)
    assert v.verdict == "recently-used"
    assert v.evidence["last_use"]["latest"][:10] == (NOW - timedelta(days=30)).date().isoformat()


def test_get_key_last_usage_alone_can_show_a_key_in_use(aws):
    arn = new_key(aws)
    hold_cloudtrail_since(120)
    when = (NOW - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    aws.control("kms/last-usage", {"key_arn": arn, "operation": "Decrypt", "timestamp": when})
    read_all()
    v = verdict_of(arn)
    assert v.verdict == "in-use"
    assert v.evidence["last_use"]["cloudtrail"]["at"] is None
    assert v.evidence["last_use"]["get_key_last_usage"]["operation"] == "Decrypt"


def test_an_unused_unreferenced_key_is_safe_to_schedule_with_its_evidence(aws):
    arn = new_key(aws, alias="alias/forgotten")
    kms_in(MAIN).create_grant(KeyId=arn, GranteePrincipal=f"arn:aws:iam::{MAIN}:role/app", Operations=["Decrypt"])
    hold_cloudtrail_since(120)
    ingest(call(arn, NOW - timedelta(days=100)))  # used, but before the window
    read_all()
    v = verdict_of(arn)
    assert v.verdict == "safe-to-schedule", v.evidence["reasons"]
    ev = v.evidence
    assert ev["aliases"] == ["alias/forgotten"]
    assert [g["grantee_principal"] for g in ev["grants"]] == [f"arn:aws:iam::{MAIN}:role/app"]
    assert ev["references"]["resources"] == [] and ev["references"]["not_checked"] == []
    assert sorted(ev["references"]["checked"]) == sorted(
        ["s3", "ec2", "rds", "secretsmanager", "lambda", "dynamodb", "sns", "sqs"]
    )
    assert ev["monthly_saving"] == "1.00"
    assert ev["deletion_protection"]["protected"] is False
    assert ev["window_days"] == 90 and ev["in_use_days"] == 7


def test_a_key_named_only_by_an_s3_buckets_default_encryption_is_not_safe_to_schedule(aws):
    arn = new_key(aws, alias="alias/bucket-key")
    s3 = session_in(MAIN).client("s3", region_name=REGION)
    s3.create_bucket(Bucket="kmsdash-test-reports")
    s3.put_bucket_encryption(
        Bucket="kmsdash-test-reports",
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": "alias/bucket-key",
                    }
                }
            ]
        },
    )
    hold_cloudtrail_since(120)
    read_all()
    v = verdict_of(arn)
    assert v.verdict == "no-recent-use"
    assert v.evidence["references"]["resources"] == [
        {
            "service": "s3",
            "type": "s3-bucket-default-encryption",
            "resource": "arn:aws:s3:::kmsdash-test-reports",
            "key_setting": "alias/bucket-key",
            "seen": v.evidence["references"]["resources"][0]["seen"],
        }
    ]
    assert any("name the key" in r for r in v.evidence["reasons"])


def test_a_primary_whose_replica_is_pending_deletion_says_when_its_clock_starts(aws):
    primary = new_key(aws, MultiRegion=True)
    replica = kms_in(MAIN).replicate_key(KeyId=primary.rsplit("/", 1)[1], ReplicaRegion="eu-west-1")[
        "ReplicaKeyMetadata"
    ]["Arn"]
    kms_in(MAIN, "eu-west-1").schedule_key_deletion(KeyId=replica.rsplit("/", 1)[1], PendingWindowInDays=7)
    hold_cloudtrail_since(120)
    hold_cloudtrail_since(120, region="eu-west-1")
    read_all(regions=(REGION, "eu-west-1"))
    v = verdict_of(primary)
    assert v.verdict == "safe-to-schedule", v.evidence["reasons"]
    mr = v.evidence["multi_region"]
    assert mr["type"] == "PRIMARY"
    assert [(r["arn"], r["state"]) for r in mr["replicas"]] == [(replica, "PendingDeletion")]
    assert mr["replicas"][0]["deletion_date"] is not None
    assert "PendingReplicaDeletion" in mr["deletion_clock"] and "1 left" in mr["deletion_clock"]


def test_cloudtrail_data_shorter_than_the_window_rules_out_safe_to_schedule(aws):
    arn = new_key(aws)
    hold_cloudtrail_since(20)
    read_all()
    v = verdict_of(arn)
    assert v.verdict == "no-recent-use"
    assert any("shorter than the 90-day window" in r for r in v.evidence["reasons"])


def test_a_longer_window_setting_needs_data_that_reaches_back_as_far(aws, settings):
    settings.KMSDASH_RETIREMENT_WINDOW_DAYS = 180
    arn = new_key(aws, days_old=400)
    hold_cloudtrail_since(120)
    read_all()
    assert verdict_of(arn).verdict == "no-recent-use"
    hold_cloudtrail_since(200)
    assert verdict_of(arn).verdict == "safe-to-schedule"


def test_a_denied_service_is_not_checked_never_none(aws):
    arn = new_key(aws)
    hold_cloudtrail_since(120)
    aws.fault("secretsmanager.ListSecrets", "AccessDeniedException", count=10)
    read_all()
    check = ReferenceCheck.objects.get(account_id=MAIN, region=REGION, service="secretsmanager")
    assert check.status == "not-checked" and "AccessDeniedException" in check.reason
    assert ReferenceCheck.objects.get(account_id=MAIN, region=REGION, service="s3").status == "checked"
    v = verdict_of(arn)
    assert v.verdict == "no-recent-use"
    assert [n["service"] for n in v.evidence["references"]["not_checked"]] == ["secretsmanager"]
    assert "secretsmanager" not in v.evidence["references"]["checked"]


def test_a_scope_never_read_for_references_is_not_checked(aws):
    arn = new_key(aws)
    hold_cloudtrail_since(120)
    services.ingest_keys(source_for(MAIN), REGION)
    v = verdict_of(arn)
    assert v.verdict == "no-recent-use"
    assert {n["reason"] for n in v.evidence["references"]["not_checked"]} == {"never read"}


def test_a_minimum_waiting_period_in_the_key_policy_is_shown(aws):
    protect = {
        "Sid": "Deletion needs 30 days",
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "kms:ScheduleKeyDeletion",
        "Resource": "*",
        "Condition": {"NumericLessThan": {"kms:ScheduleKeyDeletionPendingWindowInDays": "30"}},
    }
    arn = new_key(aws, Policy=json.dumps({"Version": "2012-10-17", "Statement": [root_statement(MAIN), protect]}))
    read_all()
    protection = verdict_of(arn).evidence["deletion_protection"]
    assert protection["protected"] is True
    assert protection["statements"] == [
        {"sid": "Deletion needs 30 days", "effect": "Deny", "operator": "NumericLessThan", "value": "30"}
    ]


def test_resources_of_every_service_are_found_by_key_id_alias_or_arn(aws):
    import io
    import zipfile

    arn = new_key(aws, alias="alias/everything")
    key_id = arn.rsplit("/", 1)[1]
    session = session_in(MAIN)
    ec2 = session.client("ec2", region_name=REGION)
    ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1, Encrypted=True, KmsKeyId=arn)
    session.client("rds", region_name=REGION).create_db_instance(
        DBInstanceIdentifier="db1",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="admin1",
        MasterUserPassword="not-a-real-password",
        AllocatedStorage=20,
        StorageEncrypted=True,
        KmsKeyId=arn,
    )
    session.client("secretsmanager", region_name=REGION).create_secret(
        Name="db-password", SecretString="x", KmsKeyId="alias/everything"
    )
    role = session.client("iam", region_name=REGION).create_role(RoleName="fn", AssumeRolePolicyDocument="{}")
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return None\n")
    session.client("lambda", region_name=REGION).create_function(
        FunctionName="worker",
        Runtime="python3.12",
        Role=role["Role"]["Arn"],
        Handler="app.handler",
        Code={"ZipFile": code.getvalue()},
        KMSKeyArn=arn,
        Environment={"Variables": {"MODE": "batch"}},
    )
    session.client("dynamodb", region_name=REGION).create_table(
        TableName="orders",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        SSESpecification={"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": arn},
    )
    session.client("sns", region_name=REGION).create_topic(Name="events", Attributes={"KmsMasterKeyId": key_id})
    session.client("sqs", region_name=REGION).create_queue(
        QueueName="jobs", Attributes={"KmsMasterKeyId": f"arn:aws:kms:{REGION}:{MAIN}:alias/everything"}
    )
    read_all()
    found = set(KeyReference.objects.filter(key=arn).values_list("service", "resource_type"))
    assert {
        ("ec2", "ebs-volume"),
        ("rds", "rds-instance"),
        ("secretsmanager", "secret"),
        ("lambda", "lambda-environment"),
        ("dynamodb", "dynamodb-table"),
        ("sns", "sns-topic"),
        ("sqs", "sqs-queue"),
    } <= found
    assert verdict_of(arn).verdict == "no-recent-use"


def test_the_command_prints_every_customer_key_with_verdict_and_evidence(aws, capsys):
    used = new_key(aws)
    unused = new_key(aws)
    hold_cloudtrail_since(120)
    ingest(call(used, NOW - timedelta(days=1)))
    read_all()
    capsys.readouterr()
    call_command("key_retirement", "--format", "json")
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["keys"]
    rows = {row["key"]: row for row in out["keys"]}
    assert set(rows) == {used, unused}
    for row in out["keys"]:
        assert set(row) == {"key", "verdict", "evidence"} and row["verdict"] in retirement.VERDICTS
    assert (rows[used]["verdict"], rows[unused]["verdict"]) == ("in-use", "safe-to-schedule")

    call_command("key_retirement", "--format", "json", "--key", unused)
    assert [row["key"] for row in json.loads(capsys.readouterr().out)["keys"]] == [unused]


def test_a_replicas_region_does_not_list_its_primarys_aliases(aws):
    primary = new_key(aws, alias="alias/global", MultiRegion=True)
    kms_in(MAIN).replicate_key(KeyId=primary.rsplit("/", 1)[1], ReplicaRegion="eu-west-1")
    read_all(regions=(REGION, "eu-west-1"))
    assert verdict_of(primary).evidence["aliases"] == ["alias/global"]
    listed = [a["AliasName"] for a in kms_in(MAIN, "eu-west-1").list_aliases()["Aliases"]]
    assert "alias/global" not in listed


def test_references_are_read_under_their_own_run_lock(aws):
    from kmsdash.locks import run_lock

    with run_lock(services.references_lock_name(MAIN, REGION)) as held:
        assert held
        assert services.refresh_references(source_for(MAIN), REGION) is None
    assert ReferenceCheck.objects.count() == 0
    assert aws.requests("secretsmanager.ListSecrets") == []
