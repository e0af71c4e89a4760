"""The demo's key-lifecycle stories, beside the twenty keys of the world (demo/activity.py).

Keys that carry no ordinary traffic, each set up for one "safe to delete?" verdict or one lifecycle
finding, with the resources and states that explain it:

    prod-ops-tools          recently-used: one Decrypt in CloudTrail, half a window ago
    prod-report-exports     no-recent-use: never used, but an S3 bucket's default encryption names it
    prod-global-legacy      safe-to-schedule, a multi-Region primary whose only replica is pending
                            deletion (its waiting period would start once the replica is gone)
    prod-global-sessions    replica-policy-drift: the eu-west-1 replica's policy has an extra statement
    prod-hsm-import         key-material-expiring (imported material, 12 days left)
    data-partner-import     key-material-expired (3 days ago)
    prod-tokenization       rotation-on-demand-budget (9 of 10 on-demand rotations used)
    prod-load-test-1/-2     key-churn: created 12 and 5 days ago, scheduled for deletion today

The world's own keys give `in-use` (almost all of them) and, with the demo's look-back window,
`safe-to-schedule` for data-eu-archive-2023, which nothing has read for over a year. The "in use"
keys here answer GetKeyLastUsage (the emulator's store) rather than carry CloudTrail traffic.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from audits.synthetic import identity_role, kms_record

from .activity import DATA, PROD

if TYPE_CHECKING:
    from .seed import Emulator

US, EU = "us-east-1", "eu-west-1"
REPORT_BUCKET = "prod-report-exports"


def _policy(account: str, *extra: dict[str, Any]) -> str:
    root = {
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }
    return json.dumps({"Version": "2012-10-17", "Id": "key-default-1", "Statement": [root, *extra]})


def seed_lifecycle(emulator: Emulator, *, now: datetime, window_days: int) -> tuple[dict[str, str], list[dict]]:
    """Create the lifecycle keys; returns alias -> key ARN and the CloudTrail records to deliver
    with the world's (the recently-used key's one call)."""
    arns: dict[str, str] = {}

    def key(alias: str, account: str = PROD, region: str = US, **create: Any) -> dict[str, Any]:
        kms = emulator.client("kms", account, region)
        meta = kms.create_key(Description=f"demo lifecycle: {alias}", Policy=_policy(account), **create)["KeyMetadata"]
        kms.create_alias(AliasName=f"alias/{alias}", TargetKeyId=meta["KeyId"])
        arns[alias] = meta["Arn"]
        return meta

    def created(alias: str, days: float) -> None:
        emulator.control(
            "kms/key-dates", {"key_arn": arns[alias], "creation_date": (now - timedelta(days=days)).isoformat()}
        )

    def last_used(alias: str, days: float) -> None:
        when = (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        emulator.control("kms/last-usage", {"key_arn": arns[alias], "operation": "Decrypt", "timestamp": when})

    # recently-used: its last call is in CloudTrail (when the seeded month reaches back that far)
    # and in GetKeyLastUsage, half a window ago.
    key("prod-ops-tools")
    created("prod-ops-tools", 400)
    last_used("prod-ops-tools", max(window_days // 2, 1) + 0.125)
    used_at = now - timedelta(days=max(window_days // 2, 1), hours=3)
    records = [
        kms_record(
            event_name="Decrypt",
            event_time=used_at,
            key_arn=arns["prod-ops-tools"],
            identity=identity_role(PROD, "ops-runbook", "ops-runbook-1"),
            region=US,
            recipient_account_id=PROD,
        )
    ]

    # no-recent-use: never called, but a bucket encrypts new objects with it by default.
    key("prod-report-exports")
    created("prod-report-exports", 60)
    s3 = emulator.client("s3", PROD, US)
    s3.create_bucket(Bucket=REPORT_BUCKET)
    s3.put_bucket_encryption(
        Bucket=REPORT_BUCKET,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": "alias/prod-report-exports",
                    }
                }
            ]
        },
    )

    # safe-to-schedule with a deletion clock: the primary's replica is already pending deletion.
    legacy = key("prod-global-legacy", MultiRegion=True)
    created("prod-global-legacy", 300)
    last_used("prod-global-legacy", window_days + 12)
    replica = emulator.client("kms", PROD, US).replicate_key(KeyId=legacy["KeyId"], ReplicaRegion=EU)
    emulator.client("kms", PROD, EU).schedule_key_deletion(
        KeyId=replica["ReplicaKeyMetadata"]["KeyId"], PendingWindowInDays=7
    )

    # replica-policy-drift: someone added a statement to the replica only.
    sessions = key("prod-global-sessions", MultiRegion=True)
    last_used("prod-global-sessions", 1)
    replica = emulator.client("kms", PROD, US).replicate_key(KeyId=sessions["KeyId"], ReplicaRegion=EU)
    extra = {
        "Sid": "EU support engineers",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{PROD}:role/eu-support"},
        "Action": ["kms:Decrypt"],
        "Resource": "*",
    }
    emulator.client("kms", PROD, EU).put_key_policy(
        KeyId=replica["ReplicaKeyMetadata"]["KeyId"], PolicyName="default", Policy=_policy(PROD, extra)
    )

    # Imported key material: one expiring soon, one expired.
    key("prod-hsm-import", Origin="EXTERNAL")
    last_used("prod-hsm-import", 1)
    emulator.control(
        "kms/key-material", {"key_arn": arns["prod-hsm-import"], "valid_to": (now + timedelta(days=12)).isoformat()}
    )
    key("data-partner-import", account=DATA, Origin="EXTERNAL")
    last_used("data-partner-import", 5)
    emulator.control(
        "kms/key-material", {"key_arn": arns["data-partner-import"], "valid_to": (now - timedelta(days=3)).isoformat()}
    )

    # rotation-on-demand-budget: 9 of the 10 on-demand rotations spent.
    tokenization = key("prod-tokenization")
    last_used("prod-tokenization", 1)
    kms = emulator.client("kms", PROD, US)
    for _ in range(9):
        kms.rotate_key_on_demand(KeyId=tokenization["KeyId"])

    # key-churn: load-test keys made and thrown away within days.
    for alias, days in (("prod-load-test-1", 12), ("prod-load-test-2", 5)):
        meta = key(alias)
        created(alias, days)
        kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    return arns, records
