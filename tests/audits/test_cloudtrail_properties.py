"""Properties of the parser over arbitrary input: it only ever normalizes or raises
ParseError/NotKmsEvent, and whatever it returns can be stored as is."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audits.cloudtrail import (
    ACCOUNT_RE,
    EVENT_ID_MAX,
    LIMITS,
    BusinessHours,
    NotKmsEvent,
    ParseError,
    loads_record,
    parse_record,
)

FIXTURE = Path(__file__).parent / "fixtures" / "kms_cloudtrail_examples.json"
EXAMPLES = [example["record"] for example in json.loads(FIXTURE.read_text())]

FIELDS = sorted({name for rec in EXAMPLES for name in rec} | {"vpcEndpointId", "errorMessage", "brandNewField"})
IDENTITY_FIELDS = [
    "type",
    "arn",
    "accountId",
    "principalId",
    "invokedBy",
    "sessionContext",
    "sessionIssuer",
    "onBehalfOf",
]

# Any character at all, NUL and lone surrogates included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=30)
# Values that steer records down the parser's branches instead of stopping at the first check.
MEANINGFUL = st.sampled_from(
    [
        "kms.amazonaws.com",
        "s3.amazonaws.com",
        "1.08",
        "1.99",
        "2.0",
        "111122223333",
        "444455556666",
        "111122223333\n",
        "us-west-2",
        "cn-north-1",
        "2026-11-02T12:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59Z",
        "AssumedRole",
        "IAMUser",
        "AWSService",
        "AWSAccount",
        "AWS::KMS::Key",
        "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "mrk-1234abcd12ab34cd56ef1234567890ab",
        "alias/aws/ebs",
        "arn:aws:s3:::bucket/object",
        "arn:aws:sts::111122223333:assumed-role/Role/session",
        "true",
        "",
        "\x00",
        "\ud800",
        "x" * 5000,
    ]
)
STRINGS = MEANINGFUL | ANY_TEXT
KEYS = st.sampled_from(FIELDS + IDENTITY_FIELDS + ["keyId", "encryptionContext", "keyMetadata", "aws:s3:arn", "ARN"])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | STRINGS
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS | ANY_TEXT, children, max_size=5),
    max_leaves=20,
)
TIMES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()).map(
    datetime.isoformat
)
PLAUSIBLE_TIMES = st.datetimes(min_value=datetime(2013, 1, 1), max_value=datetime(2030, 1, 1)).map(
    lambda when: when.strftime("%Y-%m-%dT%H:%M:%SZ")
)
HOURS = st.builds(
    BusinessHours,
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago"]).map(
        ZoneInfo
    ),
    st.just(time(6, 0)),
    st.just(time(23, 0)),
    st.booleans(),
)


def mostly(valid):
    """Usually a valid value for the field, otherwise any JSON value at all."""
    return st.sampled_from([valid] * 15 + [JSON]).flatmap(lambda strategy: strategy)


ISSUER = st.fixed_dictionaries({}, optional={"arn": mostly(STRINGS), "type": JSON})
IDENTITY = st.fixed_dictionaries(
    {},
    optional={
        "type": mostly(st.sampled_from(["AssumedRole", "IAMUser", "Root", "AWSService", "AWSAccount", "SAMLUser"])),
        "invokedBy": mostly(STRINGS),
        "arn": mostly(STRINGS),
        "accountId": mostly(st.sampled_from(["111122223333", "444455556666"])),
        "principalId": mostly(STRINGS),
        "sessionContext": mostly(st.fixed_dictionaries({"sessionIssuer": mostly(ISSUER)})),
        "onBehalfOf": mostly(st.fixed_dictionaries({}, optional={"userId": mostly(STRINGS)})),
    },
)
RESOURCE = st.fixed_dictionaries({}, optional={"ARN": mostly(STRINGS), "type": mostly(STRINGS), "accountId": JSON})
REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "keyId": mostly(STRINGS),
        "encryptionContext": mostly(st.dictionaries(STRINGS, STRINGS, max_size=3)),
        "constraints": JSON,
    },
)
KEY_METADATA = st.fixed_dictionaries({"arn": mostly(STRINGS)})
# Records shaped like KMS records: the fields the parser reads, each usually valid and otherwise
# anything at all, plus fields it has never heard of.
KMS_SHAPED = st.fixed_dictionaries(
    {
        "eventSource": mostly(st.just("kms.amazonaws.com")),
        "eventID": mostly(st.uuids().map(str)),
        "eventTime": mostly(PLAUSIBLE_TIMES),
        "eventName": mostly(st.sampled_from(["Decrypt", "CreateKey", "ListKeys"]) | STRINGS),
        "recipientAccountId": mostly(st.sampled_from(["111122223333", "444455556666"])),
    },
    optional={
        "eventVersion": mostly(st.sampled_from(["1.02", "1.08", "1.11", "1.99", "2.0"])),
        "userIdentity": mostly(IDENTITY),
        "awsRegion": mostly(st.sampled_from(["us-west-2", "cn-north-1", "us-gov-west-1"]) | STRINGS),
        "requestParameters": mostly(REQUEST),
        "responseElements": mostly(st.fixed_dictionaries({"keyMetadata": mostly(KEY_METADATA)})),
        "resources": mostly(st.lists(mostly(RESOURCE), max_size=3)),
        "readOnly": mostly(st.booleans() | st.sampled_from(["true", "false"])),
        **{
            name: mostly(STRINGS)
            for name in (
                "errorCode",
                "errorMessage",
                "userAgent",
                "sourceIPAddress",
                "requestID",
                "sharedEventID",
                "vpcEndpointId",
                "eventType",
                "eventCategory",
            )
        },
        "additionalEventData": JSON,
        "brandNewField": JSON,
    },
)


def paths(value, prefix=()):
    """Every path to a value inside a record."""
    if isinstance(value, dict):
        for name, child in value.items():
            yield (*prefix, name)
            yield from paths(child, (*prefix, name))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield (*prefix, index)
            yield from paths(child, (*prefix, index))


@st.composite
def mutated_examples(draw):
    """A real example with a few of its fields, at any depth, dropped or replaced by any JSON value."""
    rec = copy.deepcopy(draw(st.sampled_from(EXAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        candidates = list(paths(rec))
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent = rec
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            parent[path[-1]] = draw(JSON | TIMES)
        elif isinstance(parent, dict):
            del parent[path[-1]]
    return rec


def storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return "\x00" not in text


def check(rec, hours: BusinessHours) -> None:
    try:
        event = parse_record(rec, hours)
    except (ParseError, NotKmsEvent) as exc:
        assert storable(str(exc))
        return
    for name, limit in LIMITS.items():
        value = getattr(event, name)
        assert isinstance(value, str) and len(value) <= limit and storable(value), name
    assert 0 < len(event.event_id) <= EVENT_ID_MAX and storable(event.event_id)
    assert ACCOUNT_RE.match(event.recipient_account_id)
    assert event.caller_account_id == "" or ACCOUNT_RE.match(event.caller_account_id)
    assert event.event_time.tzinfo is UTC
    assert event.read_only in (True, False, None)
    assert isinstance(event.after_hours, bool)
    if event.encryption_context is not None:
        assert all(storable(k) and storable(v) for k, v in event.encryption_context.items())
        json.dumps(event.encryption_context, allow_nan=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS | ANY_TEXT, JSON, max_size=12), HOURS)
def test_any_json_object_normalizes_or_raises_only_parse_errors(rec, hours):
    check(rec, hours)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(KMS_SHAPED, HOURS)
def test_any_kms_shaped_record_normalizes_or_raises_only_parse_errors(rec, hours):
    check(rec, hours)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_examples(), HOURS)
def test_any_mutation_of_a_real_example_normalizes_or_raises_only_parse_errors(rec, hours):
    check(rec, hours)


@settings(max_examples=150, deadline=None)
@given(mutated_examples(), HOURS)
def test_the_json_text_of_any_mutated_example_normalizes_or_raises_only_parse_errors(rec, hours):
    text = json.dumps(rec, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        decoded = loads_record(text)
    except ParseError:
        return
    check(decoded, hours)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | STRINGS)
def test_any_bytes_or_text_decode_to_an_object_or_raise_parse_error(text):
    try:
        rec = loads_record(text)
    except ParseError:
        return
    assert isinstance(rec, dict)
    check(rec, BusinessHours(ZoneInfo("UTC"), time(6, 0), time(23, 0)))


@settings(max_examples=300, deadline=None)
@given(TIMES | STRINGS, HOURS)
def test_any_event_time_in_any_business_time_zone_normalizes_or_raises_parse_error(text, hours):
    check({**EXAMPLES[0], "eventTime": text}, hours)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(STRINGS, STRINGS, max_size=6))
def test_any_encryption_context_is_kept_storable_and_otherwise_unchanged(context):
    rec = copy.deepcopy(EXAMPLES[1])
    rec["requestParameters"]["encryptionContext"] = context

    check(rec, BusinessHours(ZoneInfo("UTC"), time(6, 0), time(23, 0)))
    if all(storable(k) and storable(v) for k, v in context.items()):
        assert parse_record(rec).encryption_context == (context or None)


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30), timezones=st.timezones()),
    st.timezones(),
    HOURS,
)
def test_after_hours_depends_on_the_instant_not_on_the_zone_it_is_written_in(when, other_zone, hours):
    assert hours.is_after_hours(when) == hours.is_after_hours(when.astimezone(other_zone))
