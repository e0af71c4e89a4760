"""CloudTrail record -> one normalized KMS event.

Pure functions: no database, no network. Every rule that decides a figure in kmsdash lives here
once, so the parser tests pin them:

key
    1. the ARN of the `resources[]` entry typed `AWS::KMS::Key` (records older than the `type`
       field carry an untyped entry: a key ARN there counts too; blank ARNs are skipped);
    2. else `requestParameters.keyId` when it is a key ARN;
    3. else a bare key id there (UUID or `mrk-` id), made into an ARN from `awsRegion` and
       `recipientAccountId`;
    4. else `responseElements.keyMetadata.arn` (CreateKey, ReplicateKey);
    5. else the alias or identifier given, shown as such until the inventory knows which key
       it names. Events about no key at all (ListKeys, ListAliases) keep key ''.
principal
    AssumedRole: `sessionContext.sessionIssuer.arn` (the role; the session name goes to
    session_name); IAMUser, Root, FederatedUser, IdentityCenterUser: `arn` (without one:
    `principalId`, else the Identity Center user `onBehalfOf.userId`); AWSAccount: `accountId`;
    AWSService, or no type but an `invokedBy` (KMS's own DeleteKey/RotateKey): the `invokedBy`
    value. Other types: `arn`, else `principalId`, else `accountId`.
service
    `userIdentity.invokedBy` when present (`s3.amazonaws.com`, `AWS Internal`, ...).
failed
    a non-empty `errorCode`.
after-hours
    the event's local time (KMSDASH_TIME_ZONE) is outside business hours
    (KMSDASH_BUSINESS_HOURS, start <= t < end), or falls on a local Saturday or Sunday when
    KMSDASH_WEEKENDS_AFTER_HOURS.
s3_bucket
    the bucket named by an `aws:s3:arn` encryption context (object ARN, or bucket ARN when the
    bucket uses an S3 Bucket Key).
quota_class
    the KMS request quota the call counts against (quota_class_of), or '' when it counts against
    none of the account's: see QUOTA_CLASSES.

Only `eventSource == "kms.amazonaws.com"` is kept; a well-formed record from another source
raises NotKmsEvent. Anything malformed raises ParseError with the reason: a field of the wrong
JSON type, no eventID or eventTime, invalid UTF-8 or JSON, a major eventVersion other than 1
(AWS: compare the major version for equality, the minor with >=, ignore unknown fields).
Attacker-chosen text is never a reason to reject: it is cut to its column limit (LIMITS), and
NUL characters and lone surrogates, which PostgreSQL cannot store, become U+FFFD.
"""

from __future__ import annotations

import json
import math
import operator
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils.dateparse import parse_datetime

KMS_EVENT_SOURCE = "kms.amazonaws.com"
SUPPORTED_MAJOR_VERSION = "1"

# \Z and [0-9], not $ and \d: `$` also matches before a trailing newline and `\d` matches any
# Unicode digit, and either would let a value through that the columns and AWS reject.
KEY_ARN_RE = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+\Z")
# A bare key id: a UUID, or a multi-Region key id (mrk- followed by 32 hex digits).
KEY_ID_RE = re.compile(
    r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|mrk-[0-9a-fA-F]{32})\Z"
)
ACCOUNT_RE = re.compile(r"^[0-9]{12}\Z")
REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]+\Z")
VERSION_RE = re.compile(r"^([0-9]+)(?:\.[0-9]+)?\Z")

# Real KMS records nest about six levels deep; far deeper nesting is hostile, and would make
# anything that walks the record recursively (json.dumps of the raw record) crash.
MAX_DEPTH = 64
# Any time zone offset keeps these years inside what datetime can represent.
MIN_YEAR, MAX_YEAR = 1970, 9998

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
EVENT_ID_MAX = 64
# Top-level string fields copied as they are (but for LIMITS and cleaning), in the order of their
# columns: source_ip, user_agent, error_code, error_message, event_type, event_category, request_id,
# shared_event_id, vpc_endpoint_id.
_PLAIN_TEXT_FIELDS = (
    "sourceIPAddress",
    "userAgent",
    "errorCode",
    "errorMessage",
    "eventType",
    "eventCategory",
    "requestID",
    "sharedEventID",
    "vpcEndpointId",
)
# The text columns in the order parse_record builds them, and their limits in the same order.
_TEXT_COLUMNS = (
    "event_name",
    "region",
    "key",
    "principal",
    "principal_type",
    "session_name",
    "service",
    "source_ip",
    "user_agent",
    "error_code",
    "error_message",
    "event_type",
    "event_category",
    "request_id",
    "shared_event_id",
    "vpc_endpoint_id",
    "s3_bucket",
)
_TEXT_LIMITS = tuple(LIMITS[name] for name in _TEXT_COLUMNS)

# The KMS operations kmsdash tells apart, each named once here; the other lists derive from these.
#
# How a call's request quota is found (AWS KMS Developer Guide, "Request quotas"; quota_class_of):
BY_ALGORITHM = "by-algorithm"  # the key's shared class, from the algorithm named (symmetric if none)
SIGNING = "signing"  # RSA or ECC by the signing algorithm, which is required
KEY_AGREEMENT = "key-agreement"  # ECC keys only
KEY_PAIR = "key-pair"  # a class per key pair spec family
OWN = "own"  # a quota of the operation's own, the class named after it


class Operation(NamedTuple):
    usage: bool  # a cryptographic operation: a call that uses a key (CloudTrail logs it readOnly)
    context: bool  # it carries an encryption context
    quota: str  # how its request quota is found (above)


KMS_OPERATIONS: dict[str, Operation] = {
    "Encrypt": Operation(True, True, BY_ALGORITHM),
    "Decrypt": Operation(True, True, BY_ALGORITHM),
    "ReEncrypt": Operation(True, True, BY_ALGORITHM),
    "GenerateDataKey": Operation(True, True, BY_ALGORITHM),
    "GenerateDataKeyWithoutPlaintext": Operation(True, True, BY_ALGORITHM),
    "GenerateDataKeyPair": Operation(True, True, KEY_PAIR),
    "GenerateDataKeyPairWithoutPlaintext": Operation(True, True, KEY_PAIR),
    "Sign": Operation(True, False, SIGNING),
    "Verify": Operation(True, False, SIGNING),
    "GenerateMac": Operation(True, False, BY_ALGORITHM),
    "VerifyMac": Operation(True, False, BY_ALGORITHM),
    "DeriveSharedSecret": Operation(True, False, KEY_AGREEMENT),
    # Not key usage, but with request quotas: GenerateRandom shares the symmetric one (or a custom
    # key store's); the List/Describe/Get calls each have their own.
    "GenerateRandom": Operation(False, False, BY_ALGORITHM),
    **{
        name: Operation(False, False, OWN)
        for name in (
            "DescribeKey",
            "GetKeyLastUsage",
            "GetKeyPolicy",
            "GetKeyRotationStatus",
            "GetPublicKey",
            "ListAliases",
            "ListGrants",
            "ListKeyPolicies",
            "ListKeyRotations",
            "ListKeys",
            "ListResourceTags",
            "ListRetirableGrants",
        )
    },
}
USAGE_OPERATIONS = tuple(name for name, operation in KMS_OPERATIONS.items() if operation.usage)
CONTEXT_OPERATIONS = tuple(name for name, operation in KMS_OPERATIONS.items() if operation.context)
DATA_KEY_PAIR_OPERATIONS = frozenset(name for name, operation in KMS_OPERATIONS.items() if operation.quota == KEY_PAIR)

# The classes of critical events, for the alerts and the critical-events page. Grants that an AWS
# service creates or retires on the caller's behalf (userIdentity.invokedBy set, e.g. EBS attaching
# an encrypted volume, autoscaling launching an instance) happen all day and are routine.
DESTRUCTIVE = "destructive"
ACCESS_CHANGING = "access-changing"
LIFECYCLE = "lifecycle"
ROUTINE = "routine"
_CRITICAL_CLASSES = {
    "ScheduleKeyDeletion": DESTRUCTIVE,
    "DisableKey": DESTRUCTIVE,
    "DeleteImportedKeyMaterial": DESTRUCTIVE,
    "DeleteAlias": DESTRUCTIVE,
    "PutKeyPolicy": ACCESS_CHANGING,
    "CreateGrant": ACCESS_CHANGING,
    "RetireGrant": ACCESS_CHANGING,
    "RevokeGrant": ACCESS_CHANGING,
    "CancelKeyDeletion": LIFECYCLE,
    "EnableKey": LIFECYCLE,
    "ImportKeyMaterial": LIFECYCLE,
    "EnableKeyRotation": LIFECYCLE,
    "DisableKeyRotation": LIFECYCLE,
    "CreateAlias": LIFECYCLE,
    "UpdateAlias": LIFECYCLE,
    "ReplicateKey": LIFECYCLE,
    "UpdatePrimaryRegion": LIFECYCLE,
    "CreateKey": LIFECYCLE,
}
# Key-management operations the critical-events views list.
CRITICAL_EVENT_NAMES = frozenset(_CRITICAL_CLASSES)
GRANT_OPERATIONS = tuple(name for name in _CRITICAL_CLASSES if name.endswith("Grant"))


def critical_class(event_name: str, service: str = "") -> str:
    """destructive, access-changing, lifecycle or routine for a critical event ('' for any other).

    service: the event's userIdentity.invokedBy (Event.service): a grant made or retired through
    an AWS service is routine."""
    found = _CRITICAL_CLASSES.get(event_name, "")
    if found and event_name in GRANT_OPERATIONS and service:
        return ROUTINE
    return found


_ARN_IDENTITY_TYPES = frozenset({"IAMUser", "Root", "FederatedUser", "IdentityCenterUser"})
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class ParseError(ValueError):
    """The record cannot be normalized; the reason goes to the quarantine table."""


class NotKmsEvent(Exception):
    """A well-formed record from another event source: counted as ignored."""


# Not frozen: a frozen dataclass sets each of its 24 fields through object.__setattr__, which made
# building an event a fifth of the parser's time. unsafe_hash keeps the hash the frozen class had.
@dataclass(slots=True, unsafe_hash=True)
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
    encryption_context: dict[str, str] | None
    request_id: str
    shared_event_id: str
    vpc_endpoint_id: str
    s3_bucket: str
    after_hours: bool
    quota_class: str
    own: bool = False  # one of kmsdash's own calls (OwnCalls)

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
        start, end = settings.KMSDASH_BUSINESS_HOURS
        return cls(ZoneInfo(settings.KMSDASH_TIME_ZONE), start, end, settings.KMSDASH_WEEKENDS_AFTER_HOURS)

    def is_after_hours(self, when: datetime) -> bool:
        # Parsed times are in UTC already, and the default zone is UTC: no conversion needed then.
        local = when if self.tz is _UTC_ZONE and when.tzinfo is UTC else when.astimezone(self.tz)
        if self.weekends_after_hours and local.weekday() >= 5:
            return True
        return not (self.start <= local.time() < self.end)


_UTC_ZONE = ZoneInfo("UTC")  # ZoneInfo keeps one instance per key, so `is` finds the UTC zone
DEFAULT_HOURS = BusinessHours(_UTC_ZONE, time(6, 0), time(23, 0))


@dataclass(frozen=True, slots=True)
class OwnCalls:
    """How kmsdash tells its own AWS calls apart from everyone's (issue: they are KMS events too).

    Every boto3 client kmsdash builds appends `mark` (kmsdash/<version>) to its user agent, which
    CloudTrail records. A user agent is whatever the caller sends, so anyone could add the mark to
    hide a call from the counts and alerts; where kmsdash knows its own principals (the sources'
    reader roles and KMSDASH_SELF_PRINCIPALS), a call is its own only when it also comes from one
    of them. Flagged calls are stored like any other and shown with the pages' switch.
    """

    mark: str
    principals: frozenset[str] = frozenset()

    def matches(self, user_agent: str, principal: str) -> bool:
        if self.mark not in user_agent:
            return False
        return not self.principals or principal in self.principals


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        # Python would read it as infinity, which no JSON text (and no stored raw record) can hold.
        raise ValueError(f"number {text[:40]} is beyond the range of a float")
    return value


def loads_json(text: str) -> Any:
    """JSON text as kmsdash reads it: integers of any size (up to Python's 4,300 digits), no NaN or
    Infinity and no number that overflows a float (not JSON, and PostgreSQL's jsonb refuses them)."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def loads_record(text: str | bytes) -> dict[str, Any]:
    """Decode one record's JSON text; invalid UTF-8 or JSON raises ParseError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"invalid UTF-8 at byte {exc.start}") from exc
    try:
        record = loads_json(text)
    except RecursionError as exc:
        raise ParseError("invalid JSON: nested too deeply") from exc
    except ValueError as exc:
        raise ParseError(f"invalid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise ParseError(f"a record must be a JSON object, got {type(record).__name__}")
    return record


def parse_record(
    record: dict[str, Any],
    hours: BusinessHours = DEFAULT_HOURS,
    *,
    json_text: bytes | None = None,
    own_calls: OwnCalls | None = None,
) -> NormalizedEvent:
    """Normalize one CloudTrail record (a dict from an S3 log file or a LookupEvents CloudTrailEvent).

    Raises NotKmsEvent for other event sources and ParseError for anything malformed.
    json_text: the record's JSON text (rawcodec.dumps), when the caller has it. A text that is
    shallow (_is_shallow_json) spares walking the whole record to check its nesting depth.
    own_calls: how to recognise kmsdash's own calls; without it, no call is flagged as its own.
    """
    if not isinstance(record, dict):
        raise ParseError(f"a record must be a JSON object, got {type(record).__name__}")
    get = record.get
    source = get("eventSource")
    if source != KMS_EVENT_SOURCE:
        if isinstance(source, str) and source:
            raise NotKmsEvent(_clean_text(source[:128]))
        raise ParseError("eventSource missing or not a string")

    version = get("eventVersion")
    if version is not None:
        match = VERSION_RE.match(version) if isinstance(version, str) else None
        if not match or match.group(1).lstrip("0") != SUPPORTED_MAJOR_VERSION:
            raise ParseError(f"unsupported eventVersion {_shown(version)}")
    if json_text is None or not _is_shallow_json(json_text):
        _check_depth(record)

    event_id = _text(record, "eventID").strip()
    if not event_id:
        raise ParseError("eventID missing")
    if len(event_id) > EVENT_ID_MAX:
        raise ParseError(f"eventID longer than {EVENT_ID_MAX} characters")
    event_time = _parse_time(get("eventTime"))
    event_name = _text(record, "eventName").strip()
    if not event_name:
        raise ParseError("eventName missing")
    region = _text(record, "awsRegion")

    identity = _object(record, "userIdentity")
    principal, principal_type, session_name = principal_of(identity)
    caller_account_id = _text(identity, "accountId", "userIdentity.")
    recipient_account_id = _text(record, "recipientAccountId")
    if not recipient_account_id:
        # Old records may lack recipientAccountId; the caller's account received them.
        recipient_account_id = caller_account_id
    if not ACCOUNT_RE.match(recipient_account_id):
        raise ParseError(f"recipientAccountId {_shown(recipient_account_id)} is not a 12-digit account id")

    request = _object(record, "requestParameters")
    response = _object(record, "responseElements")
    resources = get("resources")
    if resources is None:
        resources = []
    elif not isinstance(resources, list):
        raise ParseError("resources is not a list")
    context = encryption_context_of(request)
    key = key_of(resources, request, response, region, recipient_account_id)
    # Most records lack some of these fields: the default '' spares calling _text for them.
    plain = [value if type(value := get(field, "")) is str else _text(record, field) for field in _PLAIN_TEXT_FIELDS]

    # The text columns in _TEXT_COLUMNS' order, each cut to its column's limit (a C-speed look
    # first: hardly any text is that long).
    texts = [event_name, region, key, principal, principal_type, session_name, service_of(identity), *plain]
    texts.append(s3_bucket_of(context))
    if any(map(operator.gt, map(len, texts), _TEXT_LIMITS)):
        texts = [text[:limit] for text, limit in zip(texts, _TEXT_LIMITS, strict=True)]
    # One look over all the text finds the rare record that needs cleaning: ASCII text (nearly all)
    # can hold no surrogate, only a NUL, and str.isascii() costs next to nothing.
    everything = "".join([*texts, event_id, *context, *context.values()])
    if "\x00" in everything or (not everything.isascii() and _UNSTORABLE.search(everything)):
        texts = [_clean_text(text) for text in texts]
        event_id = _clean_text(event_id)
        context = {_clean_text(k): _clean_text(v) for k, v in context.items()}
    (
        event_name, region, key, principal, principal_type, session_name, service,
        source_ip, user_agent, error_code, error_message, event_type, event_category,
        request_id, shared_event_id, vpc_endpoint_id, s3_bucket,
    ) = texts  # fmt: skip
    if not ACCOUNT_RE.match(caller_account_id):
        caller_account_id = ""
    read_only = _read_only(get("readOnly"))
    encryption_context = dict(context) if context else None
    after_hours = hours.is_after_hours(event_time)
    quota_class = quota_class_of(event_name, request, principal_type, recipient_account_id, caller_account_id, key)
    own = own_calls is not None and own_calls.matches(user_agent, principal)
    # Positional, in the order of the fields (the names are theirs): 24 keyword arguments cost
    # twice as much as building the event.
    return NormalizedEvent(
        recipient_account_id,
        event_id,
        event_time,
        event_name,
        region,
        key,
        principal,
        principal_type,
        session_name,
        service,
        caller_account_id,
        source_ip,
        user_agent,
        error_code,
        error_message,
        read_only,
        event_type,
        event_category,
        encryption_context,
        request_id,
        shared_event_id,
        vpc_endpoint_id,
        s3_bucket,
        after_hours,
        quota_class,
        own,
    )


# The shared per-second request quotas of cryptographic operations (AWS KMS Developer Guide,
# "Request quotas"; the figures are in capacity/quotas.py). Each call counts against one class:
SYMMETRIC = "symmetric"  # symmetric and HMAC keys, GenerateRandom
RSA = "rsa"
ECC = "ecc"  # ECC and SM2 keys share one quota
ML_DSA = "ml-dsa"
CUSTOM_KEY_STORE = "custom-key-store"  # GenerateRandom in a key store here; keys: see capacity
SHARED_QUOTA_CLASSES = (SYMMETRIC, RSA, ECC, ML_DSA, CUSTOM_KEY_STORE)
_ALGORITHM_CLASSES = (("RSA", RSA), ("ECDSA", ECC), ("SM2", ECC), ("ECC", ECC), ("ML_DSA", ML_DSA))


def _algorithm_class(algorithm: Any) -> str:
    """The quota class of a key by the algorithm (or key pair spec) a request names; '' if none does."""
    if not isinstance(algorithm, str) or algorithm in ("", "SYMMETRIC_DEFAULT"):
        return ""
    for prefix, quota_class in _ALGORITHM_CLASSES:
        if algorithm.startswith(prefix):
            return quota_class
    return ""


def quota_class_of(
    event_name: str, request: dict[str, Any], principal_type: str, recipient: str, caller: str, key: str
) -> str:
    """The request quota a call counts against, from the operation and the algorithm the record names.

    The algorithm a request names tells the key's spec (an RSA key takes only RSAES/RSASSA
    algorithms, an ECC key ECDSA or ECDH, SM2 keys SM2DSA and SM2PKE), so the class never waits for
    the inventory; keys in a custom key store are told apart by the inventory, when read
    (capacity.selectors). '' for a call that counts against none of the recipient's quotas:
    - another account's call as the key owner's trail records it (the caller's account is throttled,
      and its own trail has the call);
    - an AWS service's own call with a key of another account (an AWS owned key: those "do not count
      against the AWS KMS quotas");
    - operations without a request-rate quota here (key management beyond the List/Describe/Get calls).
    Failed calls keep their class: AWS counts them too.
    """
    if caller and caller != recipient:
        return ""
    if principal_type == "AWSService" and key.startswith("arn:") and key.split(":")[4:5] != [recipient]:
        return ""
    quota = KMS_OPERATIONS[event_name].quota if event_name in KMS_OPERATIONS else ""
    if quota == BY_ALGORITHM:
        if event_name == "GenerateRandom":
            return CUSTOM_KEY_STORE if request.get("customKeyStoreId") else SYMMETRIC
        if event_name == "ReEncrypt":
            return (
                _algorithm_class(request.get("sourceEncryptionAlgorithm"))
                or _algorithm_class(request.get("destinationEncryptionAlgorithm"))
                or SYMMETRIC
            )
        return _algorithm_class(request.get("encryptionAlgorithm")) or SYMMETRIC
    if quota == SIGNING:
        # SigningAlgorithm is required; a request without one is refused before it counts.
        return _algorithm_class(request.get("signingAlgorithm"))
    if quota == KEY_AGREEMENT:
        return ECC
    if quota == KEY_PAIR:
        spec = request.get("keyPairSpec")
        if not isinstance(spec, str) or not spec:
            return ""
        family = spec if spec in ("RSA_2048", "RSA_3072", "RSA_4096") else "ECC"
        return f"GenerateDataKeyPair {family}"
    if quota == OWN:
        return event_name
    return ""


def key_of(resources: list[Any], request: dict[str, Any], response: dict[str, Any], region: str, account: str) -> str:
    """The key an event is about, by the rules in the module docstring, in their order."""
    # Every field a rule may read is type-checked, whichever rule decides.
    key_id = _text(request, "keyId", "requestParameters.").strip()
    metadata = _object(response, "keyMetadata", "responseElements.")
    created = _text(metadata, "arn", "responseElements.keyMetadata.")
    # 1. The resources[] entry typed AWS::KMS::Key; an untyped key ARN from older records.
    typed = untyped = ""
    for index, resource in enumerate(resources):
        if not isinstance(resource, dict):
            raise ParseError(f"resources[{index}] is not an object")
        # The error's location is formatted only for a field that is not a string.
        arn = resource.get("ARN")
        if type(arn) is not str:
            arn = _text(resource, "ARN", f"resources[{index}].")
        kind = resource.get("type")
        if type(kind) is not str:
            kind = _text(resource, "type", f"resources[{index}].")
        if arn and kind == "AWS::KMS::Key":
            typed = typed or arn
        elif arn and not kind and KEY_ARN_RE.match(arn):
            untyped = untyped or arn
    if typed or untyped:
        return typed or untyped
    # 2. requestParameters.keyId when it is a key ARN.
    if KEY_ARN_RE.match(key_id):
        return key_id
    # 3. A bare key id there, made into an ARN from the event's region and recipient account.
    if KEY_ID_RE.match(key_id) and REGION_RE.match(region) and ACCOUNT_RE.match(account):
        return f"arn:{partition_of(region)}:kms:{region}:{account}:key/{key_id}"
    # 4. responseElements.keyMetadata.arn (CreateKey, ReplicateKey).
    if created:
        return created
    # 5. Whatever identifier was given (an alias name or alias ARN), shown as such until the
    #    inventory knows which key it names; '' when the event is about no key.
    return key_id


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def principal_of(identity: dict[str, Any]) -> tuple[str, str, str]:
    """(principal, identity type, session name) for a userIdentity block."""
    kind = _text(identity, "type", "userIdentity.")
    invoked_by = _text(identity, "invokedBy", "userIdentity.")
    arn = _text(identity, "arn", "userIdentity.")
    principal_id = _text(identity, "principalId", "userIdentity.")
    account = _text(identity, "accountId", "userIdentity.")
    context = _object(identity, "sessionContext", "userIdentity.")
    issuer = _object(context, "sessionIssuer", "userIdentity.sessionContext.")
    role_arn = _text(issuer, "arn", "userIdentity.sessionContext.sessionIssuer.")
    # IdentityCenterUser records carry no arn, only the Identity Center user they act for.
    behalf_of = _object(identity, "onBehalfOf", "userIdentity.")
    user_id = _text(behalf_of, "userId", "userIdentity.onBehalfOf.")
    if kind == "AssumedRole":
        # arn:aws:sts::<account>:assumed-role/<role>/<session>
        session = arn.split("/", 2)[2] if arn.count("/") >= 2 else ""
        return role_arn or arn, kind, session
    if kind in _ARN_IDENTITY_TYPES:
        return arn or principal_id or user_id, kind, ""
    if kind == "AWSAccount":
        return account, kind, ""
    if kind == "AWSService" or (not kind and invoked_by):
        return invoked_by, kind or "AWSService", ""
    # Other types (SAMLUser, WebIdentityUser, Role, Unknown, ...): the most specific id there is.
    return arn or principal_id or account, kind, ""


def service_of(identity: dict[str, Any]) -> str:
    return _text(identity, "invokedBy", "userIdentity.")


def encryption_context_of(request: dict[str, Any]) -> dict[str, str]:
    """requestParameters.encryptionContext; KMS defines it as a map of strings to strings."""
    context = request.get("encryptionContext")
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise ParseError("requestParameters.encryptionContext is not an object")
    for name, value in context.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ParseError("requestParameters.encryptionContext is not a map of strings")
    return context


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
        parsed = parse_datetime(value)
    except ValueError as exc:
        raise ParseError(f"eventTime {_shown(value)} is not an ISO 8601 time") from exc
    if parsed is None:
        raise ParseError(f"eventTime {_shown(value)} is not an ISO 8601 time")
    # Not kmsdash.dates.parse_utc: the range is checked before converting, which a year at either
    # end of the calendar would overflow.
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ParseError(f"eventTime {_shown(value)} is out of range")
    return parsed.astimezone(UTC)


def _read_only(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    # LookupEvents' own ReadOnly attribute is the string "true"/"false".
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ParseError("readOnly is not a boolean")


def _text(obj: dict[str, Any], name: str, where: str = "") -> str:
    """A string field: '' when absent or null, ParseError when of another type."""
    value = obj.get(name)
    if type(value) is str:
        return value
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParseError(f"{where}{name} is not a string")
    return value


def _object(obj: dict[str, Any], name: str, where: str = "") -> dict[str, Any]:
    """An object field: {} when absent or null, ParseError when of another type."""
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParseError(f"{where}{name} is not an object")
    return value


def _is_shallow_json(text: bytes) -> bool:
    """True when the JSON `text` cannot nest deeper than MAX_DEPTH: every level of nesting opens
    with a '{' or a '[', so a text holding at most MAX_DEPTH of them (in strings too) has at most
    MAX_DEPTH levels. Counting runs at C speed, walking the parsed record does not."""
    return text.count(b"{") + text.count(b"[") <= MAX_DEPTH


def _check_depth(record: dict[str, Any]) -> None:
    if _deeper_than(record, MAX_DEPTH - 1):
        raise ParseError(f"record nested deeper than {MAX_DEPTH} levels")


def _deeper_than(value: dict | list, allowed: int) -> bool:
    """True when containers nest more than `allowed` levels below `value`.

    Recursive, which is a third faster than walking level by level; it stops at MAX_DEPTH frames,
    so however deep the record, the check itself cannot exhaust the stack.
    """
    for child in value.values() if type(value) is dict else value:
        if (type(child) is dict or type(child) is list) and (not allowed or _deeper_than(child, allowed - 1)):
            return True
    return False


def _clean_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded: U+FFFD for both."""
    return _UNSTORABLE.sub("\ufffd", value)


def _shown(value: Any) -> str:
    """A bounded, storable rendering of a bad value for a ParseError reason."""
    if isinstance(value, str):
        return _clean_text(repr(value[:60]))
    # Never repr() anything else: a deeply nested list raises RecursionError, a huge int ValueError.
    return f"of type {type(value).__name__}"
