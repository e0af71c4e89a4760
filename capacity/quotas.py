"""AWS KMS request quotas (requests per second, per account and region) and the overrides of them.

Defaults: AWS KMS Developer Guide, "Request quotas" (requests-per-second table), as recorded in the
project's shared research notes (aws-facts.md section 4, "Request quotas", checked against the
live guide in 2026): the shared symmetric quota is 10,000 by default, 20,000 in six regions and
100,000 in three; RSA 1,000; ECC and SM2 1,000; ML-DSA 1,000; each custom key store 1,800; and
the management calls below their own per-operation figures. All are adjustable per account, which
KMSDASH_KMS_QUOTAS records: JSON of requests per second keyed "<account>:<region>:<class>" (account
or region may be "*"), e.g. {"111122223333:eu-west-1:symmetric": 25000}. The most specific entry
wins: account and region, then account, then region, then "*:*".

Pure: no database, so that settings.py can validate the override at start-up.
"""

from __future__ import annotations

import json
import re
from typing import Any

from audits.cloudtrail import CUSTOM_KEY_STORE, ECC, ML_DSA, RSA, SHARED_QUOTA_CLASSES, SYMMETRIC

SYMMETRIC_DEFAULT = 10_000
SYMMETRIC_BY_REGION = {
    **dict.fromkeys(("us-east-1", "us-west-2", "eu-west-1"), 100_000),
    **dict.fromkeys(
        ("us-east-2", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1", "eu-central-1", "eu-west-2"), 20_000
    ),
}
SHARED_DEFAULTS = {RSA: 1_000, ECC: 1_000, ML_DSA: 1_000, CUSTOM_KEY_STORE: 1_800}
# Per-operation quotas of management calls (their class is the operation's name), and of
# GenerateDataKeyPair per key pair spec.
OPERATION_DEFAULTS = {
    "DescribeKey": 2_000,
    "GetKeyPolicy": 1_000,
    "GetKeyRotationStatus": 1_000,
    "GetPublicKey": 2_000,
    "GetKeyLastUsage": 5,
    "ListAliases": 500,
    "ListKeys": 500,
    "ListGrants": 100,
    "ListKeyPolicies": 100,
    "ListKeyRotations": 100,
    "ListResourceTags": 2_000,
    "ListRetirableGrants": 100,
    "GenerateDataKeyPair ECC": 100,
    "GenerateDataKeyPair RSA_2048": 20,
    "GenerateDataKeyPair RSA_3072": 4,
    "GenerateDataKeyPair RSA_4096": 1,
}
# Classes an override may name: the shared quotas (the four, and ML-DSA's).
OVERRIDABLE = SHARED_QUOTA_CLASSES
_ACCOUNT = re.compile(r"^(?:[0-9]{12}|\*)\Z")
_REGION = re.compile(r"^(?:[a-z]{2}(?:-[a-z]+)+-[0-9]+|\*)\Z")


class QuotaConfigError(ValueError):
    """KMSDASH_KMS_QUOTAS is not what it must be; the message names the entry."""


def parse_overrides(text: str) -> dict[tuple[str, str, str], float]:
    """KMSDASH_KMS_QUOTAS -> {(account, region, class): requests per second}; '' is no override."""
    if not text.strip():
        return {}
    try:
        raw: Any = json.loads(text)
    except ValueError as exc:
        raise QuotaConfigError(f"KMSDASH_KMS_QUOTAS is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise QuotaConfigError('KMSDASH_KMS_QUOTAS must be a JSON object of "<account>:<region>:<class>": rate')
    found: dict[tuple[str, str, str], float] = {}
    for entry, rate in raw.items():
        parts = entry.split(":")
        if len(parts) != 3 or not _ACCOUNT.match(parts[0]) or not _REGION.match(parts[1]):
            raise QuotaConfigError(
                f'KMSDASH_KMS_QUOTAS entry {entry!r}: the key must be "<account>:<region>:<class>" '
                "(a 12-digit account or *, a region or *)"
            )
        if parts[2] not in OVERRIDABLE:
            raise QuotaConfigError(
                f"KMSDASH_KMS_QUOTAS entry {entry!r}: unknown class {parts[2]!r} (one of {', '.join(OVERRIDABLE)})"
            )
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0 or rate == float("inf"):
            raise QuotaConfigError(
                f"KMSDASH_KMS_QUOTAS entry {entry!r}: the rate must be a positive number, got {rate!r}"
            )
        found[(parts[0], parts[1], parts[2])] = float(rate)
    return found


def default_quota(region: str, quota_class: str) -> float | None:
    """AWS's default requests per second for a class in a region; None for a class without one."""
    if quota_class == SYMMETRIC:
        return float(SYMMETRIC_BY_REGION.get(region, SYMMETRIC_DEFAULT))
    value = SHARED_DEFAULTS.get(quota_class, OPERATION_DEFAULTS.get(quota_class))
    return None if value is None else float(value)


def quota(account: str, region: str, quota_class: str, overrides: dict[tuple[str, str, str], float]) -> float | None:
    """The quota that applies: the most specific override, else AWS's default."""
    for key in ((account, region), (account, "*"), ("*", region), ("*", "*")):
        found = overrides.get((*key, quota_class))
        if found is not None:
            return found
    return default_quota(region, quota_class)
