"""The demo keys raise every finding kind exactly on the key meant for it, and nowhere else.

The `demo_keys` fixture creates, through boto3 in each account, keys with aliases, policies,
grants, tags, rotation and states chosen so that after the activity below, `ingest_keys` and a
findings recompute, every finding kind shows up exactly on the key meant for it. Each DemoKey has
a `usage` hint telling `activity` what CloudTrail should show for it:

    "normal"          steady successful use by the account's own roles and services
    "none"            no activity at all (the unused key)
    "disabled-calls"  recent calls failing with DisabledException (the key is disabled)
    "still-used"      recent successful Decrypts (the key is pending deletion)
    "cross-account"   normal use plus Decrypts by `foreign_account` roles (recipient = key owner)
    "new-principal"   normal use, plus a principal appearing only in the last 7 days
    "bad-context"     normal use, encryption context Department/DataClassification, some calls
                      with values outside the rule (e.g. Department=Marketing) or keys missing

The lifecycle findings have their keys too: a multi-Region key whose replica's policy differs,
imported key material expiring and expired, a key with 8 on-demand rotations spent, and a key
created 5 days ago and already scheduled for deletion (key churn, a finding on the account).

It also creates a CloudTrail trail per account (one blind to KMS) and an encryption-context rule.
Keys are backdated 200 days through the emulator's control route so that "unused for 90 days"
can hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from access.findings import ACCESS_KINDS
from inventory import findings, services
from inventory.models import EncryptionContextRule, Finding
from tests.inventory.support import MAIN, OTHER, STRANGER, call, ingest, role, session_in, source_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.emulator]

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
ACCOUNTS = (MAIN, OTHER)
FOREIGN_ACCOUNT = STRANGER  # a partner account that is not configured
ORG_ID = "o-kmsdash01"


@dataclass
class DemoKey:
    arn: str
    key_id: str
    account: str
    region: str
    alias: str
    usage: str
    finding: str = ""  # the finding kind this key is meant to raise ('' for none)
    foreign_account: str = ""


def _policy(account: str, *extra: dict) -> str:
    statements = [
        {
            "Sid": "Enable IAM policies",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Sid": "Allow use by the application role",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account}:role/app-backend"},
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
        },
        *extra,
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2)


# (alias, usage, finding, options) for the first account's first region unless stated.
PLAN: list[dict] = [
    {"alias": "alias/payments", "usage": "normal"},
    {"alias": "alias/orders", "usage": "new-principal", "finding": "new-principal"},
    {
        "alias": "alias/public-share",
        "usage": "normal",
        "finding": "policy-public",
        "policy": {
            "Sid": "Share with everyone",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "kms:Decrypt",
            "Resource": "*",
        },
    },
    {
        "alias": "alias/org-share",
        "usage": "normal",
        "policy": {
            "Sid": "Share with the organisation",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalOrgID": ORG_ID}},
        },
    },
    {
        "alias": "alias/dev-playground",
        "usage": "normal",
        "finding": "policy-wildcard-actions",
        "policy": {
            "Sid": "Developers",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::{account}:role/Developer"},
            "Action": "kms:*",
            "Resource": "*",
        },
    },
    {
        "alias": "alias/partner-exchange",
        "usage": "cross-account",
        "finding": "policy-cross-account",
        "foreign": True,
        "policy": {
            "Sid": "Partner",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{FOREIGN_ACCOUNT}:root"},
            "Action": ["kms:Decrypt", "kms:DescribeKey"],
            "Resource": "*",
        },
    },
    {"alias": "alias/vendor-backups", "usage": "normal", "finding": "grant-cross-account", "vendor_grant": True},
    {"alias": "alias/legacy-archive", "usage": "normal", "finding": "rotation-disabled", "rotation": False},
    {
        "alias": "alias/signing",
        "usage": "normal",
        "rotation": False,
        "create": {"KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY"},
    },
    {"alias": "alias/old-reports", "usage": "still-used", "finding": "pending-deletion-in-use", "state": "pending"},
    {"alias": "alias/retired-batch", "usage": "disabled-calls", "finding": "disabled-key-in-use", "state": "disabled"},
    {"alias": "alias/forgotten", "usage": "none", "finding": "unused-key"},
    {"alias": "alias/finance-ledger", "usage": "bad-context", "finding": "encryption-context-violation"},
    {"alias": "alias/data-lake", "usage": "normal", "account_index": 1},
    {"alias": "alias/analytics", "usage": "normal", "account_index": 1, "region_index": 1},
    {"alias": "alias/eu-customers", "usage": "normal", "region_index": 1, "multi_region": True},
    {"alias": "alias/apac-cache", "usage": "normal", "account_index": 1, "region_index": 2},
    # Lifecycle findings.
    {
        "alias": "alias/global-sessions",
        "usage": "normal",
        "finding": "replica-policy-drift",
        "multi_region": True,
        "replica_policy": {
            "Sid": "Replica only: support engineers",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::{account}:role/support"},
            "Action": "kms:Decrypt",
            "Resource": "*",
        },
    },
    {
        "alias": "alias/hsm-import",
        "usage": "normal",
        "finding": "key-material-expiring",
        "create": {"Origin": "EXTERNAL"},
        "material_days": 10,
    },
    {
        "alias": "alias/partner-import",
        "usage": "normal",
        "finding": "key-material-expired",
        "create": {"Origin": "EXTERNAL"},
        "material_days": -2,
    },
    {"alias": "alias/tokenization", "usage": "normal", "finding": "rotation-on-demand-budget", "on_demand": 8},
    # Created and thrown away within days: key churn (a finding on the account, not on the key).
    {"alias": "alias/load-test", "usage": "none", "state": "pending", "created_days": 5},
]


@pytest.fixture
def demo_keys(aws) -> list[DemoKey]:
    """Create the demo keys (and trails, and the encryption-context rule); see the module doc."""
    keys: list[DemoKey] = []
    for plan in PLAN:
        account = ACCOUNTS[min(plan.get("account_index", 0), len(ACCOUNTS) - 1)]
        region = REGIONS[min(plan.get("region_index", 0), len(REGIONS) - 1)]
        kms = session_in(account).client("kms", region_name=region)
        extra = [json.loads(json.dumps(plan["policy"]).replace("{account}", account))] if "policy" in plan else []
        create = {
            "Description": f"demo: {plan['alias'][6:]}",
            "Policy": _policy(account, *extra),
            "Tags": [{"TagKey": "team", "TagValue": plan["alias"][6:].split("-")[0]}],
            **plan.get("create", {}),
        }
        if plan.get("multi_region"):
            create["MultiRegion"] = True
        meta = kms.create_key(**create)["KeyMetadata"]
        key_id, arn = meta["KeyId"], meta["Arn"]
        kms.create_alias(AliasName=plan["alias"], TargetKeyId=key_id)
        if plan.get("rotation", True) and "create" not in plan:
            kms.enable_key_rotation(KeyId=key_id)
        if plan.get("vendor_grant"):
            kms.create_grant(
                KeyId=key_id,
                GranteePrincipal=f"arn:aws:iam::{FOREIGN_ACCOUNT}:role/backup-vendor",
                Operations=["Decrypt", "GenerateDataKey"],
                Name="backup-vendor",
            )
        kms.create_grant(
            KeyId=key_id,
            GranteePrincipal=f"arn:aws:iam::{account}:role/app-backend",
            Operations=["Decrypt"],
            Name="app-backend",
        )
        for _ in range(plan.get("on_demand", 0)):
            kms.rotate_key_on_demand(KeyId=key_id)
        if plan.get("multi_region") and len(REGIONS) > 1:
            replica_region = REGIONS[0] if region != REGIONS[0] else REGIONS[1]
            replica = kms.replicate_key(KeyId=key_id, ReplicaRegion=replica_region)["ReplicaKeyMetadata"]
            if "replica_policy" in plan:
                extra_statement = json.loads(json.dumps(plan["replica_policy"]).replace("{account}", account))
                session_in(account).client("kms", region_name=replica_region).put_key_policy(
                    KeyId=replica["KeyId"], PolicyName="default", Policy=_policy(account, *extra, extra_statement)
                )
        if plan.get("state") == "disabled":
            kms.disable_key(KeyId=key_id)
        elif plan.get("state") == "pending":
            kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
        created = (datetime.now(UTC) - timedelta(days=plan.get("created_days", 200))).isoformat()
        aws.control("kms/key-dates", {"key_arn": arn, "creation_date": created})
        if "material_days" in plan:
            valid_to = (datetime.now(UTC) + timedelta(days=plan["material_days"])).isoformat()
            aws.control("kms/key-material", {"key_arn": arn, "valid_to": valid_to})
        keys.append(
            DemoKey(
                arn=arn,
                key_id=key_id,
                account=account,
                region=region,
                alias=plan["alias"],
                usage=plan["usage"],
                finding=plan.get("finding", ""),
                foreign_account=FOREIGN_ACCOUNT if plan.get("foreign") else "",
            )
        )

    for index, account in enumerate(ACCOUNTS):
        session = session_in(account)
        region = REGIONS[0]
        bucket = f"kmsdash-demo-trail-{account}"
        session.client("s3", region_name=region).create_bucket(Bucket=bucket)
        trails = session.client("cloudtrail", region_name=region)
        name = "management-events" if index == 0 else "cost-saver-no-kms"
        trails.create_trail(Name=name, S3BucketName=bucket, IsMultiRegionTrail=True)
        if index != 0:
            trails.put_event_selectors(
                TrailName=name,
                EventSelectors=[
                    {
                        "ReadWriteType": "All",
                        "IncludeManagementEvents": True,
                        "ExcludeManagementEventSources": ["kms.amazonaws.com"],
                    }
                ],
            )

    EncryptionContextRule.objects.update_or_create(
        name="Finance data must be labelled",
        defaults={
            "alias_pattern": "alias/finance-*",
            "required_keys": ["Department", "DataClassification"],
            "allowed_values": {
                "Department": ["Finance", "HR", "Engineering", "Sales"],
                "DataClassification": ["Public", "Internal", "Confidential", "Restricted"],
            },
        },
    )
    return keys


def activity(key, now):
    """What CloudTrail would show for a demo key, from its usage hint."""
    ago = lambda days: now - timedelta(days=days)  # noqa: E731
    owner = dict(account=key.account, region=key.region)
    normal = [call(key.arn, ago(d), identity=role(key.account, "app-backend"), **owner) for d in (40, 20, 5, 1)]
    good = {"Department": "Finance", "DataClassification": "Internal"}
    if key.usage == "none":
        return []
    if key.usage == "disabled-calls":
        return [
            call(key.arn, ago(40), identity=role(key.account, "app-backend"), **owner),
            call(key.arn, ago(1), identity=role(key.account, "app-backend"), error_code="DisabledException", **owner),
        ]
    if key.usage == "still-used":
        return normal
    if key.usage == "cross-account":
        return normal + [call(key.arn, ago(d), identity=role(key.foreign_account, "partner"), **owner) for d in (30, 2)]
    if key.usage == "new-principal":
        return normal + [call(key.arn, ago(2), identity=role(key.account, "newcomer"), **owner)]
    if key.usage == "bad-context":
        return [
            call(key.arn, ago(d), identity=role(key.account, "app-backend"), encryption_context=good, **owner)
            for d in (40, 20, 1)
        ] + [
            call(key.arn, ago(40), identity=role(key.account, "reporting"), encryption_context=good, **owner),
            call(
                key.arn,
                ago(2),
                identity=role(key.account, "reporting"),
                encryption_context={"Department": "Marketing", "DataClassification": "Internal"},
                **owner,
            ),
        ]
    return normal


def test_every_finding_kind_appears_exactly_on_its_demo_key(demo_keys):
    keys = demo_keys
    now = datetime.now(UTC)
    ingest(*(record for key in keys for record in activity(key, now)))
    for account in ACCOUNTS:
        source = source_for(account, regions=REGIONS)
        for region in REGIONS:
            services.ingest_keys(source, region)
    findings.recompute()

    expected = {(k.finding, k.arn) for k in keys if k.finding}
    expected.add(("trail-excludes-kms", ""))
    expected.add(("key-churn", ""))  # alias/load-test, created 5 days ago and scheduled for deletion
    assert set(Finding.objects.open().values_list("kind", "key")) == expected
    # The access analysis' kinds come from the demo's IAM world, not from its keys alone.
    assert {kind for kind, _ in expected} == set(Finding.Kind.values) - ACCESS_KINDS
    trail = Finding.objects.get(kind="trail-excludes-kms")
    assert trail.account_id == OTHER and trail.subject.endswith(":trail/cost-saver-no-kms")
    cross = Finding.objects.get(kind="policy-cross-account")
    assert cross.evidence["used"] is True
