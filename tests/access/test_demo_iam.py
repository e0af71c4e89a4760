"""The demo world's IAM: every caller in its CloudTrail activity exists in IAM, and the planted
access situations are there, as kmsdash reads them back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from access import ingest, selectors
from audits.cloudtrail import principal_of
from demo.activity import ACCOUNTS, DATA, PROD, generate_activity, placeholder_keys
from demo.iam import iam_world, seed_iam
from tests.inventory.support import REGION, session_in, source_for

KEYS = placeholder_keys()


def test_every_role_and_user_calling_kms_in_the_activity_exists_in_the_demo_iam():
    world = iam_world(KEYS)
    known = {
        f"arn:aws:iam::{account}:{kind}/{name}"
        for account, iam in world.items()
        for kind, names in (("role", [r.name for r in iam.roles]), ("user", [u.name for u in iam.users]))
        for name in names
    }
    records = generate_activity(KEYS, end=datetime.now(UTC), days=3, events_per_day=300)
    callers = set()
    for record in records:
        principal, _, _ = principal_of(record["userIdentity"])
        if principal.startswith("arn:aws:iam::") and principal.split(":")[4] in ACCOUNTS:
            callers.add(principal)
    assert callers and callers <= known, sorted(callers - known)
    for account, iam in world.items():
        names = [r.name for r in iam.roles] + [u.name for u in iam.users]
        assert len(names) == len(set(names)), account


@pytest.mark.django_db(transaction=True)
def test_the_demo_iam_is_read_back_with_its_planted_cases(aws):
    made = seed_iam(lambda account: session_in(account).client("iam", region_name=REGION), KEYS)
    assert set(made) == {PROD, DATA}
    for account in (PROD, DATA):
        run = ingest.ingest_iam(source_for(account))
        assert run is not None and run.users + run.roles == made[account]

    prod = selectors.authorization_details(PROD)
    data = selectors.authorization_details(DATA)
    assert prod is not None and data is not None
    roles = {r["RoleName"]: r for r in prod["RoleDetailList"] + data["RoleDetailList"]}
    users = {u["UserName"]: u for u in prod["UserDetailList"] + data["UserDetailList"]}
    managed = {p["PolicyName"]: p for p in prod["Policies"]}
    # KMS.1 (managed) and KMS.2 (inline): kms:Decrypt on every key.
    decrypt_all = managed["kms-decrypt-everything"]["PolicyVersionList"][0]["Document"]["Statement"][0]
    assert (decrypt_all["Action"], decrypt_all["Resource"]) == ("kms:Decrypt", "*")
    assert any(p["PolicyName"] == "kms-decrypt-everything" for p in roles["report-builder"]["AttachedManagedPolicies"])
    assert users["bob.sre"]["UserPolicyList"][0]["PolicyName"] == "break-glass-decrypt"
    # Escalation, boundary, an unexplained caller, a condition, an assume-role chain.
    assert "kms:PutKeyPolicy" in str(roles["key-policy-editor"]["RolePolicyList"])
    assert "iam:PutRolePolicy" in str(roles["ci-deployer"]["RolePolicyList"])
    assert users["contractor"]["PermissionsBoundary"]["PermissionsBoundaryArn"].endswith("/no-kms-boundary")
    assert (
        "kms:" not in str(roles["spark-driver"]["RolePolicyList"])
        and not roles["spark-driver"]["AttachedManagedPolicies"]
    )
    assert "kms:ViaService" in str(roles["ingest-pipeline-role"]["RolePolicyList"])
    trusted = roles["platform-admin"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["AWS"]
    assert f"arn:aws:iam::{DATA}:user/dave.platform" in trusted
    assert users["dave.platform"]["GroupList"] == ["data-engineers"]
