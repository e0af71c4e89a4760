"""CloudTrail LookupEvents (Event history), which moto lacks, with AWS's documented semantics.

Control route (tests and the demo seeder):
    POST /_kmsdash/cloudtrail/events            {"records": [<CloudTrail record>, ...]}
        stores records for the account (recipientAccountId) and region (awsRegion) they name;
        an eventID already stored is replaced, as Event history holds one copy of an event.
    POST /_kmsdash/cloudtrail/invalidate-tokens {"count": n}
        the next n calls that carry a NextToken fail with InvalidNextTokenException, as an
        expired token does.

LookupEvents: management events only, one lookup attribute, StartTime/EndTime inclusive,
newest first, MaxResults 1-50 (default 50), a NextToken valid only with the parameters that
produced it, 90 days of history, and 2 requests per second per account and Region
(ThrottlingException, HTTP 400, beyond that).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from emulator.server import Call, addon, aws_error, control, json_response, on_reset

TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
RATE_PER_SECOND = 2
RETENTION_SECONDS = 90 * 86400
ATTRIBUTE_KEYS = (
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
)


@dataclass
class _Scope:
    # Sorted newest first: keys[i] = (-epoch seconds, eventID), records[i] the record.
    keys: list[tuple[float, str]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    calls: deque[float] = field(default_factory=deque)
    throttled: int = 0


@dataclass
class _Store:
    lock: threading.Lock = field(default_factory=threading.Lock)
    scopes: dict[tuple[str, str], _Scope] = field(default_factory=dict)
    invalidate_tokens: int = 0

    def scope(self, account: str, region: str) -> _Scope:
        return self.scopes.setdefault((account, region), _Scope())


STORE = _Store()


@on_reset
def _reset() -> None:
    with STORE.lock:
        STORE.scopes.clear()
        STORE.invalidate_tokens = 0


def _epoch(event_time: str) -> float:
    return datetime.fromisoformat(event_time.replace("Z", "+00:00")).timestamp()


def _is_management(record: dict[str, Any]) -> bool:
    return record.get("eventCategory", "Management") == "Management" and record.get("managementEvent") is not False


@control("cloudtrail/events")
def _add_events(request) -> dict[str, Any]:
    records = request.get_json(force=True).get("records", [])
    stored = skipped = invalid = 0
    with STORE.lock:
        for record in records:
            try:
                scope_of = (record["recipientAccountId"], record["awsRegion"])
                key = (-_epoch(record["eventTime"]), str(record["eventID"]))
            except (KeyError, TypeError, ValueError, AttributeError):
                invalid += 1  # Event history only holds events it could place in time and scope.
                continue
            if not _is_management(record):
                skipped += 1
                continue
            scope = STORE.scope(*scope_of)
            index = bisect.bisect_left(scope.keys, key)
            if index < len(scope.keys) and scope.keys[index] == key:
                scope.records[index] = record
            else:
                # A changed eventTime for a known eventID is not a case Event history has.
                scope.keys.insert(index, key)
                scope.records.insert(index, record)
            stored += 1
    return {"stored": stored, "skipped": skipped, "invalid": invalid}


@control("cloudtrail/invalidate-tokens")
def _invalidate_tokens(request) -> dict[str, Any]:
    with STORE.lock:
        STORE.invalidate_tokens = int(request.get_json(force=True).get("count", 1))
    return {"ok": True}


@control("cloudtrail/throttled")
def _throttled(request) -> dict[str, int]:
    """LookupEvents calls answered with ThrottlingException, per "account/region"."""
    with STORE.lock:
        return {f"{account}/{region}": scope.throttled for (account, region), scope in STORE.scopes.items()}


def _identity(record: dict[str, Any]) -> dict[str, Any]:
    identity = record.get("userIdentity")
    return identity if isinstance(identity, dict) else {}


def _resources(record: dict[str, Any]) -> list[dict[str, Any]]:
    resources = record.get("resources")
    return [r for r in resources if isinstance(r, dict)] if isinstance(resources, list) else []


def _username(identity: dict[str, Any]) -> str:
    if identity.get("userName"):
        return identity["userName"]
    arn = identity.get("arn") or ""
    if identity.get("type") == "AssumedRole" and arn.count("/") >= 2:
        return arn.split("/", 2)[2]
    return identity.get("invokedBy") or identity.get("principalId") or ""


def _matches(record: dict[str, Any], attribute: tuple[str, str] | None) -> bool:
    if attribute is None:
        return True
    name, value = attribute
    identity = _identity(record)
    resources = _resources(record)
    if name == "EventId":
        return record.get("eventID") == value
    if name == "EventName":
        return record.get("eventName") == value
    if name == "EventSource":
        return record.get("eventSource") == value
    if name == "ReadOnly":
        return str(record.get("readOnly")).lower() == value
    if name == "Username":
        return _username(identity) == value
    if name == "AccessKeyId":
        return identity.get("accessKeyId") == value
    if name == "ResourceType":
        return any(r.get("type") == value for r in resources)
    if name == "ResourceName":
        return any(r.get("ARN") == value for r in resources)
    return False


def _event(record: dict[str, Any]) -> dict[str, Any]:
    identity = _identity(record)
    event: dict[str, Any] = {
        "EventId": record["eventID"],
        "EventName": record.get("eventName", ""),
        "ReadOnly": "true" if record.get("readOnly") else "false",
        "EventTime": _epoch(record["eventTime"]),
        "EventSource": record.get("eventSource", ""),
        "Username": _username(identity),
        "Resources": [
            {"ResourceType": r.get("type", ""), "ResourceName": r.get("ARN", "")} for r in _resources(record)
        ],
        "CloudTrailEvent": json.dumps(record),
    }
    if identity.get("accessKeyId"):
        event["AccessKeyId"] = identity["accessKeyId"]
    return event


def _signature(body: dict[str, Any]) -> str:
    params = {k: v for k, v in body.items() if k != "NextToken"}
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _token(signature: str, key: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"p": signature, "t": key[0], "i": key[1]}).encode()).decode()


def _read_token(token: str, signature: str) -> tuple[float, str] | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if data["p"] != signature:
            return None
        return float(data["t"]), str(data["i"])
    except (ValueError, KeyError, TypeError):
        return None


def _time(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@addon(TARGET)
def lookup_events(call: Call):
    body = call.body
    now = time.time()
    with STORE.lock:
        scope = STORE.scope(call.account, call.region)
        while scope.calls and scope.calls[0] <= now - 1.0:
            scope.calls.popleft()
        if len(scope.calls) >= RATE_PER_SECOND:
            scope.throttled += 1
            return aws_error("ThrottlingException", "Rate exceeded")
        scope.calls.append(now)

        attributes = body.get("LookupAttributes") or []
        if len(attributes) > 1:
            return aws_error("InvalidLookupAttributesException", "You can specify only one lookup attribute.")
        attribute = None
        if attributes:
            name, value = attributes[0].get("AttributeKey"), attributes[0].get("AttributeValue")
            if name not in ATTRIBUTE_KEYS or not isinstance(value, str):
                return aws_error("InvalidLookupAttributesException", f"Invalid lookup attribute {name!r}.")
            attribute = (name, value)
        max_results = body.get("MaxResults", 50)
        if not isinstance(max_results, int) or not 1 <= max_results <= 50:
            return aws_error("InvalidMaxResultsException", "MaxResults must be between 1 and 50.")
        start = _time(body, "StartTime", now - RETENTION_SECONDS)
        end = _time(body, "EndTime", now)
        if start > end:
            return aws_error("InvalidTimeRangeException", "StartTime must be before EndTime.")
        if body.get("EventCategory") not in (None, "insight"):
            return aws_error("InvalidEventCategoryException", "EventCategory must be insight.")

        signature = _signature(body)
        # Newest first: the first index at or after EndTime going back in time.
        position = bisect.bisect_left(scope.keys, (-end, ""))
        if body.get("NextToken") is not None:
            after = _read_token(body["NextToken"], signature)
            if after is None or STORE.invalidate_tokens > 0:
                STORE.invalidate_tokens = max(0, STORE.invalidate_tokens - 1)
                return aws_error("InvalidNextTokenException", "Invalid NextToken.")
            position = max(position, bisect.bisect_right(scope.keys, after))
        oldest = max(start, now - RETENTION_SECONDS)

        events: list[dict[str, Any]] = []
        more = False
        if body.get("EventCategory") is None:  # Insights events are never stored here.
            for index in range(position, len(scope.keys)):
                key = scope.keys[index]
                if -key[0] < oldest:
                    break
                record = scope.records[index]
                if not _matches(record, attribute):
                    continue
                if len(events) == max_results:
                    more = True
                    break
                events.append(_event(record))
                last = key
    response: dict[str, Any] = {"Events": events}
    if more:
        response["NextToken"] = _token(signature, last)
    return json_response(response)
