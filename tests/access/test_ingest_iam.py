"""Reading IAM and the SCPs over an account, against the AWS emulator over HTTP."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from access import ingest, selectors
from access.models import AuthorizationChange, AuthorizationSnapshot, IamRun
from tests.inventory.support import MAIN, OTHER, REGION, session_in, source_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.emulator]

DECRYPT_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}
TRUST_ACCOUNT = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{MAIN}:root"}, "Action": "sts:AssumeRole"}],
}


def iam_in(account: str):
    return session_in(account).client("iam", region_name=REGION)


def build_world(iam, users: int = 12) -> dict:
    policy = iam.create_policy(PolicyName="decrypt-all", PolicyDocument=json.dumps(DECRYPT_ALL))["Policy"]
    iam.create_policy(PolicyName="unattached", PolicyDocument=json.dumps(DECRYPT_ALL))
    iam.create_group(GroupName="readers")
    iam.attach_group_policy(GroupName="readers", PolicyArn=policy["Arn"])
    for i in range(users):
        iam.create_user(UserName=f"user-{i:02}")
        iam.add_user_to_group(GroupName="readers", UserName=f"user-{i:02}")
    iam.put_user_policy(UserName="user-00", PolicyName="inline-decrypt", PolicyDocument=json.dumps(DECRYPT_ALL))
    if users > 1:
        iam.put_user_permissions_boundary(UserName="user-01", PermissionsBoundary=policy["Arn"])
    iam.create_role(RoleName="app", AssumeRolePolicyDocument=json.dumps(TRUST_ACCOUNT))
    iam.put_role_permissions_boundary(RoleName="app", PermissionsBoundary=policy["Arn"])
    iam.attach_role_policy(RoleName="app", PolicyArn=policy["Arn"])
    return policy


def by_name(items: list[dict], field: str) -> dict[str, dict]:
    return {item[field]: item for item in items}


def test_the_whole_authorization_details_are_stored_merged_over_every_page_in_aws_shape(aws, settings):
    settings.KMSDASH_IAM_PAGE_SIZE = 5
    policy = build_world(iam_in(MAIN))

    run = ingest.ingest_iam(source_for(MAIN))

    assert run is not None and run.status == IamRun.Status.SUCCEEDED
    assert (run.users, run.groups, run.roles, run.policies) == (12, 1, 1, 2)
    assert run.pages == 4  # 16 items, 5 a page
    assert len(aws.requests("GetAccountAuthorizationDetails")) == 4
    details = selectors.authorization_details(MAIN)
    assert details is not None and set(details) == {"UserDetailList", "GroupDetailList", "RoleDetailList", "Policies"}
    users = by_name(details["UserDetailList"], "UserName")
    assert len(users) == 12 and users["user-05"]["GroupList"] == ["readers"]
    assert users["user-00"]["UserPolicyList"] == [{"PolicyName": "inline-decrypt", "PolicyDocument": DECRYPT_ALL}]
    assert users["user-01"]["PermissionsBoundary"]["PermissionsBoundaryArn"] == policy["Arn"]
    role = by_name(details["RoleDetailList"], "RoleName")["app"]
    assert role["AssumeRolePolicyDocument"] == TRUST_ACCOUNT  # decoded from IAM's URL-encoded text
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == policy["Arn"]
    assert role["AttachedManagedPolicies"] == [{"PolicyName": "decrypt-all", "PolicyArn": policy["Arn"]}]
    group = by_name(details["GroupDetailList"], "GroupName")["readers"]
    assert group["AttachedManagedPolicies"][0]["PolicyArn"] == policy["Arn"]
    managed = by_name(details["Policies"], "PolicyName")["decrypt-all"]
    assert managed["DefaultVersionId"] == "v1"
    assert managed["PolicyVersionList"][0]["Document"] == DECRYPT_ALL
    assert isinstance(managed["CreateDate"], str)  # stored as JSON


def test_an_unchanged_account_read_again_adds_no_history_and_a_change_adds_one_row(aws):
    iam = iam_in(MAIN)
    policy = build_world(iam, users=2)
    source = source_for(MAIN)
    ingest.ingest_iam(source)
    second = ingest.ingest_iam(source)

    assert AuthorizationSnapshot.objects.filter(account_id=MAIN).count() == 1
    assert second is not None and second.changes == 0

    iam.put_role_policy(RoleName="app", PolicyName="more", PolicyDocument=json.dumps(DECRYPT_ALL))
    iam.create_user(UserName="newcomer")
    iam.detach_group_policy(GroupName="readers", PolicyArn=policy["Arn"])
    third = ingest.ingest_iam(source)

    snapshots = AuthorizationSnapshot.objects.filter(account_id=MAIN).order_by("version")
    assert [s.version for s in snapshots] == [1, 2]
    changes = {(c.kind, c.arn.rsplit("/", 1)[-1], c.change) for c in AuthorizationChange.objects.all()}
    assert changes == {
        ("role", "app", "changed"),
        ("user", "newcomer", "added"),
        ("group", "readers", "changed"),
        ("policy", "decrypt-all", "changed"),  # its attachment count
    }
    assert third is not None and third.changes == 4
    role = by_name(selectors.authorization_details(MAIN)["RoleDetailList"], "RoleName")["app"]
    assert role["RolePolicyList"] == [{"PolicyName": "more", "PolicyDocument": DECRYPT_ALL}]


def test_an_account_outside_any_organisation_records_that_scps_were_not_evaluated(aws):
    build_world(iam_in(MAIN), users=1)

    run = ingest.ingest_iam(source_for(MAIN))

    assert run is not None and run.status == IamRun.Status.SUCCEEDED and not run.scps_evaluated
    assert selectors.service_control_policies(MAIN) is None
    assert "SCPs not evaluated" in selectors.scps_note(MAIN)
    assert "AWSOrganizationsNotInUseException" in run.scps_note


def test_an_account_whose_role_may_not_read_organizations_records_scps_not_evaluated(aws):
    org = session_in(OTHER).client("organizations", region_name=REGION)
    org.create_organization(FeatureSet="ALL")
    created = org.create_account(AccountName="member", Email="member@example.com")["CreateAccountStatus"]
    member = created["AccountId"]
    aws.fault("ListParents", "AccessDeniedException")

    run = ingest.ingest_iam(source_for(member))

    assert run is not None and run.status == IamRun.Status.SUCCEEDED
    assert selectors.service_control_policies(member) is None
    assert selectors.resource_control_policies(member) is None
    assert selectors.scps_note(member) == "SCPs not evaluated: this account cannot read them (AccessDeniedException)."


def test_scps_over_the_account_its_units_and_the_root_are_read_with_their_documents(aws):
    org = session_in(OTHER).client("organizations", region_name=REGION)
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    unit = org.create_organizational_unit(ParentId=root, Name="prod")["OrganizationalUnit"]["Id"]
    member = org.create_account(AccountName="member", Email="member@example.com")["CreateAccountStatus"]["AccountId"]
    org.move_account(AccountId=member, SourceParentId=root, DestinationParentId=unit)
    deny = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "kms:ScheduleKeyDeletion", "Resource": "*"}],
    }
    scp = org.create_policy(
        Name="no-deletion", Description="", Type="SERVICE_CONTROL_POLICY", Content=json.dumps(deny)
    )["Policy"]["PolicySummary"]["Id"]
    org.attach_policy(PolicyId=scp, TargetId=unit)
    outside = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "kms:*",
                "Resource": "*",
                "Condition": {"StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-example"}},
            }
        ],
    }
    rcp = org.create_policy(
        Name="org-only", Description="", Type="RESOURCE_CONTROL_POLICY", Content=json.dumps(outside)
    )["Policy"]["PolicySummary"]["Id"]
    org.attach_policy(PolicyId=rcp, TargetId=unit)
    # A delegated administrator reads the organisation for the member account.
    reader = ingest.IamReader(iam_in(member), org)

    scps, rcps, note = reader.read_organization_policies(member)

    assert note == "" and scps is not None and rcps is not None
    levels = {(s["TargetType"], s["Name"]) for s in scps}
    assert ("ORGANIZATIONAL_UNIT", "no-deletion") in levels
    assert {"ACCOUNT", "ORGANIZATIONAL_UNIT", "ROOT"} <= {t for t, _ in levels}
    assert next(s for s in scps if s["Id"] == scp)["Content"] == deny
    assert rcp not in {s["Id"] for s in scps}
    assert next(r for r in rcps if r["Id"] == rcp)["Content"] == outside


def test_the_management_account_has_no_scps_over_it(aws):
    session_in(MAIN).client("organizations", region_name=REGION).create_organization(FeatureSet="ALL")

    run = ingest.ingest_iam(source_for(MAIN))

    assert run is not None and run.scps_evaluated
    assert selectors.service_control_policies(MAIN) == []
    assert selectors.resource_control_policies(MAIN) == []
    assert "management account" in selectors.scps_note(MAIN)


def test_a_failed_read_is_in_the_ledger_and_keeps_the_stored_snapshot(aws):
    build_world(iam_in(MAIN), users=1)
    source = source_for(MAIN)
    ingest.ingest_iam(source)
    aws.fault("GetAccountAuthorizationDetails", "ServiceFailure", status=500, count=10)

    with pytest.raises(Exception):  # noqa: B017 - whichever botocore raises after its retries
        ingest.ingest_iam(source)

    failed = IamRun.objects.order_by("-started_at").first()
    assert failed is not None and failed.status == IamRun.Status.FAILED and "ServiceFailure" in failed.error
    assert AuthorizationSnapshot.objects.filter(account_id=MAIN).count() == 1


def test_the_command_and_the_task_read_every_configured_account(aws, capsys):
    from access.tasks import schedule_iam
    from kmsdash.celery import app

    build_world(iam_in(MAIN), users=1)
    build_world(iam_in(OTHER), users=3)
    source_for(MAIN)
    source_for(OTHER)
    call_command("ingest_iam")
    out = capsys.readouterr().out
    assert f"{MAIN}: 1 users, 1 groups, 1 roles, 2 policies" in out
    assert f"{OTHER}: 3 users" in out and "SCPs not evaluated" in out

    app.conf.task_always_eager = True
    try:
        assert schedule_iam() == 2
    finally:
        app.conf.task_always_eager = False
    assert IamRun.objects.filter(status=IamRun.Status.SUCCEEDED).count() == 4
    assert selectors.accounts() == sorted([MAIN, OTHER])


def test_a_read_already_running_for_the_account_is_skipped(aws):
    from kmsdash.locks import run_lock

    source = source_for(MAIN)
    with run_lock(ingest.lock_name(source)):
        assert ingest.ingest_iam(source) is None
    assert not IamRun.objects.exists()


def test_a_changed_resource_control_policy_is_a_new_snapshot_with_its_change():
    details = {"UserDetailList": [], "GroupDetailList": [], "RoleDetailList": [], "Policies": []}
    rcp = {"Id": "p-rcp1", "Name": "org-only", "Content": {"Statement": []}, "TargetId": "r-1", "TargetType": "ROOT"}
    for content in ({"Statement": []}, {"Statement": []}, {"Statement": [{"Effect": "Deny"}]}):
        snapshot = ingest.IamSnapshot(MAIN, details, [], "", 1, [{**rcp, "Content": content}])
        ingest.store_snapshot(snapshot, IamRun.objects.create(account_id=MAIN))

    assert AuthorizationSnapshot.objects.filter(account_id=MAIN).count() == 2
    assert list(AuthorizationChange.objects.values_list("kind", "arn", "change")) == [("rcp", "p-rcp1", "changed")]
    assert selectors.resource_control_policies(MAIN)[0]["Content"] == {"Statement": [{"Effect": "Deny"}]}


def test_iam_is_scheduled_with_the_inventory_as_a_registered_task(settings):
    import access.tasks  # noqa: F401 - registers the tasks, as the worker's autodiscovery does
    from kmsdash.celery import app

    iam, inventory = settings.CELERY_BEAT_SCHEDULE["iam-authorization"], settings.CELERY_BEAT_SCHEDULE["kms-inventory"]
    assert iam["task"] == "access.tasks.schedule_iam" and iam["task"] in app.tasks
    assert iam["schedule"] == inventory["schedule"]
    assert 0 < iam["options"]["expires"] < 3600
