"""Inventory against the AWS emulator over HTTP: what is read, paginated, rate-limited and kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError
from django.core.management import call_command

from inventory import services
from inventory.models import Alias, Grant, InventoryRun, Key, KeyStateVersion, PolicyVersion, Trail
from inventory.selectors import alias_names
from tests.inventory.support import MAIN, OTHER, REGION, call, ingest, kms_in, policy, root_statement, source_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.emulator]


def test_keys_are_stored_with_their_metadata_aliases_grants_tags_rotation_and_policy(aws):
    kms = kms_in(MAIN)
    key = kms.create_key(Description="orders", Tags=[{"TagKey": "team", "TagValue": "payments"}])["KeyMetadata"]
    kms.create_alias(AliasName="alias/orders", TargetKeyId=key["KeyId"])
    kms.create_alias(AliasName="alias/orders-legacy-name", TargetKeyId=key["KeyId"])
    kms.enable_key_rotation(KeyId=key["KeyId"])
    kms.create_grant(
        KeyId=key["KeyId"], GranteePrincipal=f"arn:aws:iam::{MAIN}:role/app", Operations=["Decrypt"], Name="app-decrypt"
    )
    doc = policy(root_statement(MAIN))
    kms.put_key_policy(KeyId=key["KeyId"], PolicyName="default", Policy=doc)

    run = services.ingest_keys(source_for(MAIN), REGION)

    assert run.status == InventoryRun.Status.SUCCEEDED and run.account_id == MAIN
    stored = Key.objects.get(arn=key["Arn"])
    assert (stored.key_id, stored.account_id, stored.region) == (key["KeyId"], MAIN, REGION)
    assert (stored.description, stored.key_manager, stored.key_spec, stored.key_usage) == (
        "orders",
        "CUSTOMER",
        "SYMMETRIC_DEFAULT",
        "ENCRYPT_DECRYPT",
    )
    assert (stored.key_state, stored.origin, stored.multi_region) == ("Enabled", "AWS_KMS", False)
    assert stored.rotation_enabled is True and stored.rotation_period_days == 365
    assert stored.tags == {"team": "payments"}
    assert stored.policy == doc
    assert stored.creation_date is not None and stored.deletion_date is None
    grant = Grant.objects.get(key=stored)
    assert (grant.name, grant.grantee_principal, grant.operations) == (
        "app-decrypt",
        f"arn:aws:iam::{MAIN}:role/app",
        ["Decrypt"],
    )
    assert set(stored.aliases.values_list("name", flat=True)) == {"alias/orders", "alias/orders-legacy-name"}
    assert alias_names()[key["Arn"]] == "alias/orders"


def test_keys_of_two_accounts_are_read_through_their_assumed_roles(aws):
    main_key = kms_in(MAIN).create_key()["KeyMetadata"]["Arn"]
    other_key = kms_in(OTHER).create_key()["KeyMetadata"]["Arn"]
    services.ingest_keys(source_for(MAIN), REGION)
    services.ingest_keys(source_for(OTHER), REGION)
    assert dict(Key.objects.values_list("arn", "account_id")) == {main_key: MAIN, other_key: OTHER}


def test_120_keys_are_read_across_pages_of_50(aws, settings):
    settings.KMSDASH_KMS_PAGE_SIZE = 50
    settings.KMSDASH_KMS_RATE_LIMITS = {"ListGrants": 0, "ListKeyRotations": 0}
    kms = kms_in(MAIN)
    arns = {kms.create_key()["KeyMetadata"]["Arn"] for _ in range(120)}
    for i in range(60):
        kms.create_alias(AliasName=f"alias/k{i:03}", TargetKeyId=sorted(arns)[i])
    # Keys CloudTrail shows in use need no GetKeyLastUsage (5 requests/s): all but one here.
    unused = sorted(arns)[0]
    ingest(*(call(arn, datetime.now(UTC) - timedelta(days=1)) for arn in arns if arn != unused))

    run = services.ingest_keys(source_for(MAIN), REGION)

    assert set(Key.objects.values_list("arn", flat=True)) == arns
    assert run.keys == 120
    assert len(aws.requests("TrentService.ListKeys")) == 3
    # 60 aliases plus moto's predefined alias/aws/* ones, 50 a page.
    assert len(aws.requests("TrentService.ListAliases")) == -(-run.aliases // 50)
    assert Alias.objects.filter(key__isnull=False).count() == 60
    assert len(aws.requests("TrentService.GetKeyLastUsage")) == 1


def test_a_listing_marker_from_another_listing_is_refused(aws):
    kms = kms_in(MAIN)
    for _ in range(3):
        kms.create_key()
    marker = kms.list_keys(Limit=1)["NextMarker"]
    with pytest.raises(kms.exceptions.InvalidMarkerException):
        kms.list_aliases(Marker=marker)


def test_get_key_last_usage_is_called_at_most_5_times_a_second(aws):
    kms = kms_in(MAIN)
    for _ in range(8):
        kms.create_key()
    services.ingest_keys(source_for(MAIN), REGION)
    times = sorted(r["time"] for r in aws.requests("TrentService.GetKeyLastUsage"))
    assert len(times) == 8
    for i in range(len(times) - 5):
        assert times[i + 5] - times[i] >= 1.0, "more than 5 GetKeyLastUsage calls within one second"


def test_last_usage_from_the_api_is_stored(aws):
    kms = kms_in(MAIN)
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    aws.control("kms/last-usage", {"key_arn": arn, "operation": "GenerateDataKey", "timestamp": "2026-10-01T12:00:00Z"})
    services.ingest_keys(source_for(MAIN), REGION)
    key = Key.objects.get(arn=arn)
    assert key.last_used_operation == "GenerateDataKey"
    assert key.last_used_at.isoformat() == "2026-10-01T12:00:00+00:00"


def test_a_multi_region_primary_and_its_replica_know_each_other(aws):
    primary = kms_in(MAIN).create_key(MultiRegion=True)["KeyMetadata"]
    kms_in(MAIN).replicate_key(KeyId=primary["KeyId"], ReplicaRegion="eu-west-1")
    source = source_for(MAIN, regions=[REGION, "eu-west-1"])
    services.ingest_keys(source, REGION)
    services.ingest_keys(source, "eu-west-1")

    replica_arn = primary["Arn"].replace(REGION, "eu-west-1")
    p = Key.objects.get(arn=primary["Arn"])
    r = Key.objects.get(arn=replica_arn)
    assert (p.multi_region, p.multi_region_type, p.primary_arn) == (True, "PRIMARY", primary["Arn"])
    assert p.replica_arns == [replica_arn]
    assert (r.multi_region_type, r.primary_arn, r.region) == ("REPLICA", primary["Arn"], "eu-west-1")


def test_a_policy_change_between_two_runs_adds_a_version(aws):
    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    source = source_for(MAIN)
    services.ingest_keys(source, REGION)
    services.ingest_keys(source, REGION)
    assert PolicyVersion.objects.filter(key__arn=key["Arn"]).count() == 1

    new = policy(
        root_statement(MAIN),
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{MAIN}:role/app"},
            "Action": "kms:Decrypt",
            "Resource": "*",
        },
    )
    kms.put_key_policy(KeyId=key["KeyId"], PolicyName="default", Policy=new)
    run = services.ingest_keys(source, REGION)

    versions = list(PolicyVersion.objects.filter(key__arn=key["Arn"]).order_by("version"))
    assert [v.version for v in versions] == [1, 2]
    assert versions[1].document == new and versions[0].document != new
    assert versions[1].first_seen_at > versions[0].first_seen_at
    assert run.policy_changes == 1
    assert Key.objects.get(arn=key["Arn"]).policy == new


def test_state_history_records_disable_and_scheduled_deletion(aws):
    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    source = source_for(MAIN)
    services.ingest_keys(source, REGION)
    kms.disable_key(KeyId=key["KeyId"])
    services.ingest_keys(source, REGION)
    services.ingest_keys(source, REGION)  # unchanged: no new row
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    services.ingest_keys(source, REGION)

    states = list(
        KeyStateVersion.objects.filter(key__arn=key["Arn"])
        .order_by("first_seen_at", "id")
        .values_list("key_state", flat=True)
    )
    assert states == ["Enabled", "Disabled", "PendingDeletion"]
    stored = Key.objects.get(arn=key["Arn"])
    assert stored.deletion_date is not None and stored.key_state == "PendingDeletion"


def test_a_key_gone_from_the_listing_is_kept_and_marked_deleted(aws):
    from moto.kms.models import kms_backends

    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    source = source_for(MAIN)
    services.ingest_keys(source, REGION)
    kms_backends[MAIN][REGION].delete_key(key["KeyId"])  # what AWS does when the waiting period ends
    services.ingest_keys(source, REGION)
    assert Key.objects.get(arn=key["Arn"]).key_state == services.DELETED


def test_asymmetric_keys_have_no_rotation_status_and_aws_managed_keys_are_listed(aws):
    kms = kms_in(MAIN)
    signing = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    managed = kms.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]["Arn"]  # creates it, as in AWS
    services.ingest_keys(source_for(MAIN), REGION)
    assert Key.objects.get(arn=signing).rotation_enabled is None
    assert Key.objects.get(arn=managed).key_manager == "AWS"
    assert alias_names()[managed] == "alias/aws/s3"
    # Only the keys that can rotate are asked (none of these two).
    assert aws.requests("TrentService.GetKeyRotationStatus") == []


def test_trails_are_read_with_their_event_selectors(aws):
    session = boto3.Session()
    session.client("s3", region_name=REGION).create_bucket(Bucket="trail-logs-main")
    trail = session.client("cloudtrail", region_name=REGION)
    trail.create_trail(Name="org-trail", S3BucketName="trail-logs-main")
    trail.put_event_selectors(
        TrailName="org-trail", EventSelectors=[{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True}]
    )
    services.ingest_keys(None, REGION, account_id="123456789012")
    stored = Trail.objects.get()
    assert stored.name == "org-trail" and stored.home_region == REGION
    assert stored.event_selectors[0]["ReadWriteType"] == "WriteOnly"


def test_a_failed_read_changes_nothing_and_is_recorded(aws):
    kms = kms_in(MAIN)
    kms.create_key()
    aws.fault("TrentService.ListKeys", "AccessDeniedException", count=10)
    with pytest.raises(ClientError):
        services.ingest_keys(source_for(MAIN), REGION)
    run = InventoryRun.objects.get()
    assert run.status == InventoryRun.Status.FAILED and "AccessDenied" in run.error
    assert not Key.objects.exists()


def test_throttled_calls_are_retried(aws):
    kms = kms_in(MAIN)
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    aws.fault("TrentService.DescribeKey", "ThrottlingException", count=2)
    services.ingest_keys(source_for(MAIN), REGION)
    assert Key.objects.filter(arn=arn).exists()


def test_the_command_reads_every_configured_account_and_region(aws, capsys):
    kms_in(MAIN).create_key()
    kms_in(OTHER, "eu-west-1").create_key()
    source_for(MAIN)
    source_for(OTHER, regions=["eu-west-1"])
    call_command("ingest_keys")
    assert sorted(Key.objects.values_list("account_id", "region")) == [(MAIN, REGION), (OTHER, "eu-west-1")]
    out = capsys.readouterr().out
    assert f"{MAIN} {REGION}: 1 keys" in out and "findings:" in out

    call_command("ingest_keys", "--account-id", OTHER)
    assert InventoryRun.objects.filter(account_id=OTHER).count() == 2
    assert InventoryRun.objects.filter(account_id=MAIN).count() == 1


def test_the_scheduled_task_fans_out_per_account_and_region(aws, monkeypatch):
    from inventory.tasks import schedule_inventory
    from kmsdash.celery import app

    kms_in(MAIN).create_key()
    kms_in(MAIN, "eu-west-1").create_key()
    source_for(MAIN, regions=[REGION, "eu-west-1"])
    app.conf.task_always_eager = True
    try:
        assert schedule_inventory() == 2
    finally:
        app.conf.task_always_eager = False
    assert sorted(InventoryRun.objects.values_list("region", "status")) == [
        ("eu-west-1", "succeeded"),
        (REGION, "succeeded"),
    ]
    assert Key.objects.count() == 2


def test_grants_and_tags_are_read_across_pages_and_rotations_are_counted(aws, settings):
    settings.KMSDASH_KMS_PAGE_SIZE = 2
    kms = kms_in(MAIN)
    key = kms.create_key(Tags=[{"TagKey": f"t{i}", "TagValue": str(i)} for i in range(5)])["KeyMetadata"]
    for i in range(5):
        kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=f"arn:aws:iam::{MAIN}:role/r{i}", Operations=["Decrypt"])
    kms.enable_key_rotation(KeyId=key["KeyId"])
    kms.rotate_key_on_demand(KeyId=key["KeyId"])
    kms.rotate_key_on_demand(KeyId=key["KeyId"])
    kms.rotate_key_on_demand(KeyId=key["KeyId"])

    run = services.ingest_keys(source_for(MAIN), REGION)

    stored = Key.objects.get(arn=key["Arn"])
    assert stored.tags == {f"t{i}": str(i) for i in range(5)}
    assert run.grants == 5 and stored.grants.count() == 5
    assert stored.rotations == 3
    assert len(aws.requests("TrentService.ListGrants")) == 3
    assert len(aws.requests("TrentService.ListResourceTags")) == 3
    assert len(aws.requests("TrentService.ListKeyRotations")) == 2


def test_a_revoked_grant_and_a_deleted_alias_disappear_on_the_next_run(aws):
    kms = kms_in(MAIN)
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/temp", TargetKeyId=key["KeyId"])
    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=f"arn:aws:iam::{MAIN}:role/r", Operations=["Decrypt"])
    source = source_for(MAIN)
    services.ingest_keys(source, REGION)
    assert Grant.objects.count() == 1 and Alias.objects.filter(name="alias/temp").exists()
    kms.revoke_grant(KeyId=key["KeyId"], GrantId=grant["GrantId"])
    kms.delete_alias(AliasName="alias/temp")
    services.ingest_keys(source, REGION)
    assert Grant.objects.count() == 0 and not Alias.objects.filter(name="alias/temp").exists()
