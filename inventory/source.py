"""Reads one (account, region) from the KMS and CloudTrail APIs into plain snapshots.

Only this module talks to AWS for the inventory. Every list call is paginated, every call goes
through a per-operation client-side rate limit kept under the API's own quota (the quota is per
account and region, shared with everything else the account runs, so we take a fraction of it),
and optional fields are read defensively because older APIs and the emulator omit them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings

from audits.cloudtrail import ParseError, loads_record, principal_of
from audits.sources import pacing
from kmsdash.aws import error_code

# Requests per second we allow ourselves per operation (AWS quotas: GetKeyLastUsage 5,
# ListGrants 100, ListKeys/ListAliases 500, GetKeyPolicy/GetKeyRotationStatus 1000, ...).
DEFAULT_RATES: dict[str, float] = {
    "ListKeys": 100,
    "ListAliases": 100,
    "DescribeKey": 400,
    "GetKeyRotationStatus": 200,
    "ListKeyRotations": 50,
    "GetKeyPolicy": 200,
    "ListGrants": 50,
    "ListResourceTags": 400,
    "GetKeyLastUsage": 4,
    "DescribeTrails": 5,
    "GetEventSelectors": 5,
}
# LookupEvents (2 per second per account and region) is not limited here: every caller of it,
# the CloudTrail ingestion too, waits for its turn in audits.sources.pacing.
SELECTOR_CHANGE_DAYS = 90
SELECTOR_CHANGE_PAGES = 4

# Errors that mean "this key, not this run": it vanished, or this call does not apply to it.
SKIP_KEY_ERRORS = {"NotFoundException", "KMSInvalidStateException"}
NOT_APPLICABLE_ERRORS = {
    "UnsupportedOperationException",
    "AccessDeniedException",
    "NotFoundException",
    "KMSInvalidStateException",
    "ValidationException",
    "UnknownOperationException",
    "InvalidAction",
}


def rates() -> dict[str, float]:
    return {**DEFAULT_RATES, **getattr(settings, "KMSDASH_KMS_RATE_LIMITS", {})}


class RateLimiter:
    """At most `rate` calls per second per operation, spaced evenly (thread-safe)."""

    def __init__(self, per_operation: dict[str, float] | None = None) -> None:
        self.rates = per_operation or rates()
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, operation: str) -> None:
        rate = self.rates.get(operation)
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(operation, now))
            self._next[operation] = start + 1.0 / rate
        if start > now:
            time.sleep(start - now)


@dataclass
class KeySnapshot:
    metadata: dict[str, Any]
    rotation_enabled: bool | None = None
    rotation_period_days: int | None = None
    rotations: int = 0
    on_demand_rotations: int = 0
    policy: str | None = None
    grants: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    last_used_at: datetime | None = None
    last_used_operation: str = ""
    usage_tracking_start: datetime | None = None

    @property
    def arn(self) -> str:
        return self.metadata["Arn"]

    @property
    def customer_managed(self) -> bool:
        return self.metadata.get("KeyManager") == "CUSTOMER"

    @property
    def can_rotate(self) -> bool:
        """Only symmetric keys with KMS-generated material outside custom key stores rotate automatically."""
        m = self.metadata
        return (
            m.get("KeySpec", m.get("CustomerMasterKeySpec")) == "SYMMETRIC_DEFAULT"
            and m.get("Origin") == "AWS_KMS"
            and not m.get("CustomKeyStoreId")
        )


def _pascal(value: Any) -> Any:
    """CloudTrail's requestParameters spell API fields in camelCase: readWriteType -> ReadWriteType."""
    if isinstance(value, dict):
        return {(k[:1].upper() + k[1:] if isinstance(k, str) else k): _pascal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pascal(v) for v in value]
    return value


@dataclass
class RegionSnapshot:
    account_id: str
    region: str
    keys: list[KeySnapshot]
    aliases: list[dict[str, Any]]
    trails: list[dict[str, Any]]


class InventoryReader:
    def __init__(self, kms, cloudtrail=None, limiter: RateLimiter | None = None, page_size: int | None = None) -> None:
        self.kms = kms
        self.cloudtrail = cloudtrail
        self.limiter = limiter or RateLimiter()
        # Each API's maximum page unless told otherwise (smaller pages only cost more calls).
        self.page_size = page_size or getattr(settings, "KMSDASH_KMS_PAGE_SIZE", None)
        self.threads = max(1, int(getattr(settings, "KMSDASH_KMS_READ_THREADS", 4)))

    def _limit(self, maximum: int) -> int:
        return min(self.page_size, maximum) if self.page_size else maximum

    def _call(self, operation: str, method: str, **kwargs) -> dict[str, Any]:
        self.limiter.wait(operation)
        return getattr(self.kms, method)(**kwargs)

    def _pages(self, operation: str, method: str, field_name: str, **kwargs):
        # boto3's paginator requests each page as it is iterated: the limiter waits before the
        # first page, and before each next one only when the paginator will ask for it (the
        # page says it is truncated and gives a marker), so the rate pays for no phantom call.
        self.limiter.wait(operation)
        for page in self.kms.get_paginator(method).paginate(**kwargs):
            yield from page.get(field_name) or []
            if page.get("Truncated") and page.get("NextMarker"):
                self.limiter.wait(operation)

    def _optional(self, operation: str, method: str, **kwargs) -> dict[str, Any] | None:
        try:
            return self._call(operation, method, **kwargs)
        except ClientError as exc:
            if error_code(exc) in NOT_APPLICABLE_ERRORS:
                return None
            raise

    def read(self, account_id: str, region: str, *, skip_last_usage: Collection[str] = ()) -> RegionSnapshot:
        """Everything about the keys of one (account, region). GetKeyLastUsage (5 requests/s) is
        not asked about keys in `skip_last_usage`: CloudTrail already shows them in use."""
        key_ids = [k["KeyId"] for k in self._pages("ListKeys", "list_keys", "Keys", Limit=self._limit(1000))]
        aliases = list(self._pages("ListAliases", "list_aliases", "Aliases", Limit=self._limit(100)))
        # Keys are read a few at a time: each needs several calls, and latency, not the (limited)
        # request rate, is what makes a large account slow. Clients and the limiter are thread-safe.
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            read = pool.map(lambda key_id: self.read_key(key_id, skip_last_usage=skip_last_usage), key_ids)
            keys = [snapshot for snapshot in read if snapshot is not None]
        trails = self.read_trails(region)
        if not account_id and keys:  # the credential chain's own account: the scope of the LookupEvents quota
            account_id = str(keys[0].metadata.get("AWSAccountId", ""))
        described = {t["TrailARN"] for t in trails}
        changes = [t for t in self.read_selector_changes(account_id, region) if t["TrailARN"] not in described]
        return RegionSnapshot(account_id, region, keys, aliases, trails + changes)

    def read_key(self, key_id: str, *, skip_last_usage: Collection[str] = ()) -> KeySnapshot | None:
        try:
            metadata = self._call("DescribeKey", "describe_key", KeyId=key_id)["KeyMetadata"]
        except ClientError as exc:
            if error_code(exc) in SKIP_KEY_ERRORS:
                return None
            raise
        snap = KeySnapshot(metadata=metadata)
        arn = snap.arn
        pending = metadata.get("KeyState") in ("PendingDeletion", "PendingReplicaDeletion")
        if snap.customer_managed and snap.can_rotate and not pending:
            status = self._optional("GetKeyRotationStatus", "get_key_rotation_status", KeyId=arn)
            if status is not None:
                snap.rotation_enabled = bool(status.get("KeyRotationEnabled"))
                snap.rotation_period_days = status.get("RotationPeriodInDays")
            try:
                rotations = list(
                    self._pages(
                        "ListKeyRotations", "list_key_rotations", "Rotations", KeyId=arn, Limit=self._limit(1000)
                    )
                )
                snap.rotations = len(rotations)
                # RotateKeyOnDemand has a lifetime budget per key (10); automatic rotations do not count.
                snap.on_demand_rotations = sum(1 for r in rotations if r.get("RotationType") == "ON_DEMAND")
            except ClientError as exc:
                if error_code(exc) not in NOT_APPLICABLE_ERRORS:
                    raise
        policy = self._optional("GetKeyPolicy", "get_key_policy", KeyId=arn, PolicyName="default")
        if policy is not None:
            snap.policy = policy.get("Policy") or ""
        try:
            snap.grants = list(self._pages("ListGrants", "list_grants", "Grants", KeyId=arn, Limit=self._limit(100)))
        except ClientError as exc:
            if error_code(exc) not in NOT_APPLICABLE_ERRORS:
                raise
        if snap.customer_managed:
            try:
                tags = self._pages("ListResourceTags", "list_resource_tags", "Tags", KeyId=arn, Limit=self._limit(50))
                snap.tags = {str(t.get("TagKey", "")): str(t.get("TagValue", "")) for t in tags}
            except ClientError as exc:
                if error_code(exc) not in NOT_APPLICABLE_ERRORS:
                    raise
            if arn not in skip_last_usage and hasattr(self.kms, "get_key_last_usage"):
                usage = self._optional("GetKeyLastUsage", "get_key_last_usage", KeyId=arn)
                if isinstance((usage or {}).get("TrackingStartDate"), datetime):
                    snap.usage_tracking_start = (usage or {})["TrackingStartDate"]
                last = (usage or {}).get("KeyLastUsage") or {}
                if isinstance(last.get("Timestamp"), datetime):
                    snap.last_used_at = last["Timestamp"]
                    snap.last_used_operation = str(last.get("Operation", ""))
        return snap

    def read_trails(self, region: str) -> list[dict[str, Any]]:
        """Trails whose home is this region, with their event selectors."""
        if self.cloudtrail is None:
            return []
        self.limiter.wait("DescribeTrails")
        try:
            trails = self.cloudtrail.describe_trails(includeShadowTrails=False).get("trailList") or []
        except ClientError as exc:
            if error_code(exc) in NOT_APPLICABLE_ERRORS:
                return []
            raise
        found = []
        for trail in trails:
            if trail.get("HomeRegion", region) != region or not trail.get("TrailARN"):
                continue
            self.limiter.wait("GetEventSelectors")
            try:
                selectors = self.cloudtrail.get_event_selectors(TrailName=trail["TrailARN"])
            except ClientError as exc:
                if error_code(exc) in NOT_APPLICABLE_ERRORS or error_code(exc) == "TrailNotFoundException":
                    continue
                raise
            trail = dict(trail)
            trail["EventSelectors"] = selectors.get("EventSelectors")
            trail["AdvancedEventSelectors"] = selectors.get("AdvancedEventSelectors") or []
            found.append(trail)
        return found

    def read_selector_changes(self, account_id: str, region: str) -> list[dict[str, Any]]:
        """The latest successful PutEventSelectors per trail from CloudTrail's event history.

        It covers trails the inventory cannot describe (another account's organisation trail, no
        cloudtrail:GetEventSelectors permission). Bounded: 90 days, a few pages.
        """
        if self.cloudtrail is None:
            return []
        end = datetime.now(UTC)
        params: dict[str, Any] = {
            "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "PutEventSelectors"}],
            "StartTime": end - timedelta(days=SELECTOR_CHANGE_DAYS),
            "EndTime": end,
            "MaxResults": 50,
        }
        # Every attempt, retries included, waits for its turn in the quota it shares with the ingestion.
        pacing.pace_lookup_events(self.cloudtrail, account_id, region)
        latest: dict[str, dict[str, Any]] = {}
        pages = self.cloudtrail.get_paginator("lookup_events").paginate(**params)
        try:
            for page in islice(pages, SELECTOR_CHANGE_PAGES):
                for event in page.get("Events") or []:  # newest first
                    try:
                        record = loads_record(event.get("CloudTrailEvent") or "{}")
                        identity = record.get("userIdentity")
                        principal, _, _ = principal_of(identity if isinstance(identity, dict) else {})
                    except ParseError:
                        continue
                    if record.get("errorCode"):
                        continue
                    request = record.get("requestParameters") or {}
                    response = record.get("responseElements") or {}
                    name = str(request.get("trailName") or "")
                    arn = str(response.get("trailARN") or "")
                    if not arn and name.startswith("arn:"):
                        arn = name
                    if not arn and name:
                        arn = f"arn:aws:cloudtrail:{region}:{record.get('recipientAccountId', '')}:trail/{name}"
                    if not arn or arn in latest:
                        continue
                    latest[arn] = {
                        "TrailARN": arn,
                        "Name": arn.rsplit("/", 1)[-1],
                        "HomeRegion": region,
                        "EventSelectors": _pascal(request.get("eventSelectors")),
                        "AdvancedEventSelectors": _pascal(request.get("advancedEventSelectors")) or [],
                        "change": {
                            "event_id": str(record.get("eventID", "")),
                            "event_time": str(record.get("eventTime", "")),
                            "principal": principal,
                        },
                    }
        except ClientError as exc:
            # What the earlier pages showed stands: a failing page only shortens the history read.
            if not (error_code(exc) in NOT_APPLICABLE_ERRORS or error_code(exc).startswith("InvalidNextToken")):
                raise
        return list(latest.values())
