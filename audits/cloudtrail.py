"""CloudTrail record -> one normalized KMS event.

Pure functions: no database, no network. Every rule that decides a figure in kmsdash lives here
once (key, principal, service, failed, after-hours, S3 bucket), so the parser tests pin them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

KMS_EVENT_SOURCE = "kms.amazonaws.com"
SUPPORTED_MAJOR_VERSION = "1"

KEY_ARN_RE = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")
# A bare key id: a UUID, or a multi-Region key id (mrk- followed by 32 hex digits).
KEY_ID_RE = re.compile(r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|mrk-[0-9a-fA-F]{32})$")
ACCOUNT_RE = re.compile(r"^\d{12}$")
REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")

# Column limits (audits.models.Event); longer attacker-chosen text is cut, never rejected.
LIMITS = {
    "event_name": 64,
    "region": 32,
    "key": 2048,
    "principal": 2048,
    "principal_type": 32,
    "session_name": 256,
    "service": 256,
    "source_ip": 256,
    "user_agent": 1024,
    "error_code": 128,
    "error_message": 4096,
    "event_type": 32,
    "event_category": 32,
    "request_id": 128,
    "shared_event_id": 64,
    "vpc_endpoint_id": 128,
    "s3_bucket": 256,
}

# Key-management operations the critical-events views list.
CRITICAL_EVENT_NAMES = frozenset(
    {
        "ScheduleKeyDeletion",
        "CancelKeyDeletion",
        "DisableKey",
        "EnableKey",
        "DeleteImportedKeyMaterial",
        "ImportKeyMaterial",
        "PutKeyPolicy",
        "CreateGrant",
        "RetireGrant",
        "RevokeGrant",
        "EnableKeyRotation",
        "DisableKeyRotation",
        "CreateAlias",
        "UpdateAlias",
        "DeleteAlias",
        "ReplicateKey",
        "UpdatePrimaryRegion",
        "CreateKey",
    }
)


class ParseError(ValueError):
    """The record cannot be normalized; the reason goes to the quarantine table."""


class NotKmsEvent(Exception):
    """A well-formed record from another event source: counted as ignored."""


@dataclass(frozen=True, slots=True)
class NormalizedEvent:
    recipient_account_id: str
    event_id: str
    event_time: datetime  # aware, UTC
    event_name: str
    region: str
    key: str
    principal: str
    principal_type: str
    session_name: str
    service: str
    caller_account_id: str
    source_ip: str
    user_agent: str
    error_code: str
    error_message: str
    read_only: bool | None
    event_type: str
    event_category: str
    encryption_context: dict[str, Any] | None
    request_id: str
    shared_event_id: str
    vpc_endpoint_id: str
    s3_bucket: str
    after_hours: bool

    @property
    def day(self) -> date:
        return self.event_time.date()

    @property
    def failed(self) -> bool:
        return bool(self.error_code)


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Business hours are start <= local time < end, on weekdays (and weekends unless flagged)."""

    tz: ZoneInfo
    start: time
    end: time
    weekends_after_hours: bool = False

    @classmethod
    def from_settings(cls) -> BusinessHours:
        from django.conf import settings

        start, end = settings.KMSDASH_BUSINESS_HOURS
        return cls(ZoneInfo(settings.KMSDASH_TIME_ZONE), start, end, settings.KMSDASH_WEEKENDS_AFTER_HOURS)

    def is_after_hours(self, when: datetime) -> bool:
        local = when.astimezone(self.tz)
        if self.weekends_after_hours and local.weekday() >= 5:
            return True
        return not (self.start <= local.time().replace(tzinfo=None) < self.end)


DEFAULT_HOURS = BusinessHours(ZoneInfo("UTC"), time(6, 0), time(23, 0))


def loads_record(text: str | bytes) -> dict[str, Any]:
    """Decode one record's JSON text; invalid UTF-8 or JSON raises ParseError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"invalid UTF-8 at byte {exc.start}") from exc
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"invalid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise ParseError(f"a record must be a JSON object, got {type(record).__name__}")
    return record


def parse_record(record: dict[str, Any], hours: BusinessHours = DEFAULT_HOURS) -> NormalizedEvent:
    """Normalize one CloudTrail record (a dict from an S3 log file or a LookupEvents CloudTrailEvent).

    Raises NotKmsEvent for other event sources and ParseError for anything malformed.
    """
    if not isinstance(record, dict):
        raise ParseError(f"a record must be a JSON object, got {type(record).__name__}")
    source = record.get("eventSource")
    if source != KMS_EVENT_SOURCE:
        if isinstance(source, str) and source:
            raise NotKmsEvent(source)
        raise ParseError("eventSource missing or not a string")

    version = record.get("eventVersion")
    if version is not None:
        if not isinstance(version, str) or version.split(".", 1)[0] != SUPPORTED_MAJOR_VERSION:
            raise ParseError(f"unsupported eventVersion {version!r}")

    event_id = _required_str(record, "eventID")
    event_time = _parse_time(record.get("eventTime"))
    event_name = _required_str(record, "eventName")
    region = _optional_str(record, "awsRegion")
    recipient = _optional_str(record, "recipientAccountId")

    identity = record.get("userIdentity")
    if identity is None:
        identity = {}
    if not isinstance(identity, dict):
        raise ParseError("userIdentity is not an object")
    principal, principal_type, session_name = principal_of(identity)
    caller_account = _str_or_empty(identity.get("accountId"))
    if not recipient:
        # Old records may lack recipientAccountId; the caller's account received them.
        recipient = caller_account
    if not ACCOUNT_RE.match(recipient):
        raise ParseError(f"recipientAccountId {recipient!r} is not a 12-digit account id")

    request = record.get("requestParameters")
    if request is not None and not isinstance(request, dict):
        raise ParseError("requestParameters is not an object")
    request = request or {}
    response = record.get("responseElements")
    if response is not None and not isinstance(response, dict):
        raise ParseError("responseElements is not an object")
    response = response or {}
    resources = record.get("resources")
    if resources is not None and not isinstance(resources, list):
        raise ParseError("resources is not a list")

    context = request.get("encryptionContext")
    if context is not None and not isinstance(context, dict):
        raise ParseError("requestParameters.encryptionContext is not an object")

    error_code = _optional_str(record, "errorCode")
    read_only = record.get("readOnly")
    if isinstance(read_only, str):  # LookupEvents' own field is a string; be lenient
        read_only = {"true": True, "false": False}.get(read_only.lower())
    elif not isinstance(read_only, bool):
        read_only = None

    values = {
        "recipient_account_id": recipient,
        "event_id": event_id,
        "event_time": event_time,
        "event_name": event_name,
        "region": region,
        "key": key_of(resources or [], request, response, region, recipient),
        "principal": principal,
        "principal_type": principal_type,
        "session_name": session_name,
        "service": service_of(identity),
        "caller_account_id": caller_account if ACCOUNT_RE.match(caller_account) else "",
        "source_ip": _optional_str(record, "sourceIPAddress"),
        "user_agent": _optional_str(record, "userAgent"),
        "error_code": error_code,
        "error_message": _optional_str(record, "errorMessage"),
        "read_only": read_only,
        "event_type": _optional_str(record, "eventType"),
        "event_category": _optional_str(record, "eventCategory"),
        "encryption_context": _clean_json(context) if context else None,
        "request_id": _optional_str(record, "requestID"),
        "shared_event_id": _optional_str(record, "sharedEventID"),
        "vpc_endpoint_id": _optional_str(record, "vpcEndpointId"),
        "s3_bucket": s3_bucket_of(context),
        "after_hours": hours.is_after_hours(event_time),
    }
    for name, limit in LIMITS.items():
        values[name] = _clean_text(values[name])[:limit]
    if len(event_id) > 64:
        raise ParseError("eventID longer than 64 characters")
    return NormalizedEvent(**values)


def key_of(resources: list[Any], request: dict[str, Any], response: dict[str, Any], region: str, account: str) -> str:
    """The key an event is about, by the rules in the order the README gives them."""
    # 1. resources[] entry typed AWS::KMS::Key (older records omit the type: accept a key ARN).
    untyped = ""
    for resource in resources:
        if not isinstance(resource, dict):
            continue
        arn = resource.get("ARN")
        if not isinstance(arn, str) or not arn:
            continue
        if resource.get("type") == "AWS::KMS::Key":
            return arn
        if not untyped and "type" not in resource and KEY_ARN_RE.match(arn):
            untyped = arn
    if untyped:
        return untyped
    key_id = request.get("keyId")
    key_id = key_id.strip() if isinstance(key_id, str) else ""
    # 2. requestParameters.keyId when it is a key ARN.
    if KEY_ARN_RE.match(key_id):
        return key_id
    # 3. A bare key id there, made into an ARN from the event's region and recipient account.
    if KEY_ID_RE.match(key_id) and region and account:
        return f"arn:aws:kms:{region}:{account}:key/{key_id}"
    # 4. responseElements.keyMetadata.arn (CreateKey, ReplicateKey).
    metadata = response.get("keyMetadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("arn"), str) and metadata["arn"]:
        return metadata["arn"]
    # 5. Whatever identifier was given (an alias name or alias ARN), shown as such until the
    #    inventory knows which key it names.
    return key_id


def principal_of(identity: dict[str, Any]) -> tuple[str, str, str]:
    """(principal, identity type, session name) for a userIdentity block."""
    kind = _str_or_empty(identity.get("type"))
    invoked_by = _str_or_empty(identity.get("invokedBy"))
    if kind == "AssumedRole":
        context = identity.get("sessionContext")
        issuer = context.get("sessionIssuer") if isinstance(context, dict) else None
        role_arn = _str_or_empty(issuer.get("arn")) if isinstance(issuer, dict) else ""
        arn = _str_or_empty(identity.get("arn"))
        # arn:aws:sts::acct:assumed-role/Role/Session -> Session
        session = arn.split("/", 2)[2] if arn.count("/") >= 2 else ""
        return role_arn or arn, kind, session
    if kind in ("IAMUser", "Root", "FederatedUser", "IdentityCenterUser"):
        return _str_or_empty(identity.get("arn")) or _str_or_empty(identity.get("principalId")), kind, ""
    if kind == "AWSAccount":
        return _str_or_empty(identity.get("accountId")), kind, ""
    if kind == "AWSService" or (not kind and invoked_by):
        return invoked_by, kind or "AWSService", ""
    # Other types (SAMLUser, WebIdentityUser, Role, Unknown): the ARN when there is one.
    return (
        _str_or_empty(identity.get("arn"))
        or _str_or_empty(identity.get("principalId"))
        or _str_or_empty(identity.get("accountId"))
    ), kind, ""


def service_of(identity: dict[str, Any]) -> str:
    return _str_or_empty(identity.get("invokedBy"))


def s3_bucket_of(context: dict[str, Any] | None) -> str:
    """The bucket named by an `aws:s3:arn` encryption context (object ARN or bucket ARN)."""
    if not context:
        return ""
    arn = context.get("aws:s3:arn")
    if not isinstance(arn, str) or not arn.startswith("arn:aws") or ":s3:::" not in arn:
        return ""
    return arn.split(":s3:::", 1)[1].split("/", 1)[0]


def s3_context_names_object(context: dict[str, Any] | None) -> bool:
    """True when `aws:s3:arn` names an object, i.e. the bucket does not use an S3 Bucket Key."""
    arn = (context or {}).get("aws:s3:arn")
    return isinstance(arn, str) and ":s3:::" in arn and "/" in arn.split(":s3:::", 1)[1]


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise ParseError("eventTime missing or not a string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ParseError(f"eventTime {value[:40]!r} is not an ISO 8601 time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _required_str(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ParseError(f"{name} missing or not a string")
    return _clean_text(value.strip())


def _optional_str(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParseError(f"{name} is not a string")
    return value


def _str_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _clean_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded: replace both."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict):
        return {_clean_text(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value
