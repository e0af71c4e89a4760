"""Demo keys in the emulator, one per situation the findings look for.

`seed_demo_keys` creates, through boto3 in each account (the caller passes a session per
account), keys with aliases, policies, grants, tags, rotation and states chosen so that after
the demo's synthetic activity, `ingest_keys` and a findings recompute, every finding kind shows
up exactly on the key meant for it. It returns one DemoKey per key with a `usage` hint telling
the activity generator what CloudTrail should show for it:

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

It also creates a CloudTrail trail per account (one blind to KMS) and the demo's
encryption-context rule. Keys are backdated 200 days through the emulator's control route so
that "unused for 90 days" can hold; pass `emulator_url` to do so.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import boto3

FOREIGN_ACCOUNT = "999988887777"  # a partner account that is not configured
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


def _control(emulator_url: str, path: str, payload: dict) -> None:
    request = urllib.request.Request(
        f"{emulator_url}/_kmsdash/{path}",
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def seed_demo_keys(
    session_for: Callable[[str], boto3.Session],
    *,
    accounts: tuple[str, ...] = ("111122223333", "444455556666"),
    regions: tuple[str, ...] = ("us-east-1", "eu-west-1", "ap-southeast-2"),
    emulator_url: str | None = None,
    trail_bucket: Callable[[str], str] = lambda account: f"kmsdash-demo-trail-{account}",
) -> list[DemoKey]:
    """Create the demo keys (and trails, and the encryption-context rule); see the module doc."""
    from .models import EncryptionContextRule

    keys: list[DemoKey] = []
    for plan in PLAN:
        account = accounts[min(plan.get("account_index", 0), len(accounts) - 1)]
        region = regions[min(plan.get("region_index", 0), len(regions) - 1)]
        kms = session_for(account).client("kms", region_name=region)
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
        if plan.get("multi_region") and len(regions) > 1:
            replica_region = regions[0] if region != regions[0] else regions[1]
            replica = kms.replicate_key(KeyId=key_id, ReplicaRegion=replica_region)["ReplicaKeyMetadata"]
            if "replica_policy" in plan:
                extra_statement = json.loads(json.dumps(plan["replica_policy"]).replace("{account}", account))
                session_for(account).client("kms", region_name=replica_region).put_key_policy(
                    KeyId=replica["KeyId"], PolicyName="default", Policy=_policy(account, *extra, extra_statement)
                )
        if plan.get("state") == "disabled":
            kms.disable_key(KeyId=key_id)
        elif plan.get("state") == "pending":
            kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
        if emulator_url:
            created = (datetime.now(UTC) - timedelta(days=plan.get("created_days", 200))).isoformat()
            _control(emulator_url, "kms/key-dates", {"key_arn": arn, "creation_date": created})
            if "material_days" in plan:
                valid_to = (datetime.now(UTC) + timedelta(days=plan["material_days"])).isoformat()
                _control(emulator_url, "kms/key-material", {"key_arn": arn, "valid_to": valid_to})
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

    for index, account in enumerate(accounts):
        session = session_for(account)
        region = regions[0]
        bucket = trail_bucket(account)
        s3 = session.client("s3", region_name=region)
        try:
            s3.create_bucket(Bucket=bucket)
        except Exception:  # noqa: BLE001 - the activity seeder may have created it already
            pass
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
