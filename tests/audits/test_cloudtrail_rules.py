"""Every branch of every normalization rule in audits/cloudtrail.py, on generated records."""

from __future__ import annotations

import copy
import dataclasses
import json
import uuid
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from audits import cloudtrail, rawcodec
from audits.cloudtrail import (
    ACCOUNT_RE,
    LIMITS,
    BusinessHours,
    NotKmsEvent,
    ParseError,
    loads_record,
    parse_record,
    s3_bucket_of,
    s3_context_names_object,
)
from audits.models import Event

OWNER = "111122223333"
OTHER = "444455556666"
REGION = "eu-west-1"
KEY_ID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
KEY = f"arn:aws:kms:{REGION}:{OWNER}:key/{KEY_ID}"
OTHER_KEY = f"arn:aws:kms:us-east-1:{OWNER}:key/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
MRK_ID = "mrk-0123456789abcdef0123456789abcdef"
ROLE = f"arn:aws:iam::{OWNER}:role/app-backend"
UTC_HOURS = BusinessHours(ZoneInfo("UTC"), time(6, 0), time(23, 0))
DROP = object()


def iam_user(account: str = OWNER, name: str = "alice") -> dict:
    return {
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLE",
        "arn": f"arn:aws:iam::{account}:user/{name}",
        "accountId": account,
        "accessKeyId": "AKIAEXAMPLE",
        "userName": name,
    }


def assumed_role(account: str = OWNER, role: str = "app-backend", session: str = "i-0abc", **extra) -> dict:
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLE:{session}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
        "accountId": account,
        "accessKeyId": "ASIAEXAMPLE",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROAEXAMPLE",
                "arn": f"arn:aws:iam::{account}:role/{role}",
                "accountId": account,
                "userName": role,
            },
            "attributes": {"creationDate": "2026-11-02T09:00:00Z", "mfaAuthenticated": "false"},
        },
        **extra,
    }


def record(**fields) -> dict:
    """A current-format KMS Decrypt record; keyword arguments replace fields, DROP removes them."""
    base: dict[str, Any] = {
        "eventVersion": "1.11",
        "userIdentity": iam_user(),
        "eventTime": "2026-11-02T12:00:00Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": "Decrypt",
        "awsRegion": REGION,
        "sourceIPAddress": "203.0.113.10",
        "userAgent": "aws-sdk-java/2.20",
        "requestParameters": {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        "responseElements": None,
        "requestID": "5a1b2c3d-0000-4000-8000-000000000001",
        "eventID": str(uuid.uuid4()),
        "readOnly": True,
        "resources": [],
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": OWNER,
        "eventCategory": "Management",
    }
    for name, value in fields.items():
        if value is DROP:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def typed(arn: str, type_: str = "AWS::KMS::Key") -> dict:
    return {"accountId": OWNER, "type": type_, "ARN": arn}


def untyped(arn: str) -> dict:
    return {"accountId": OWNER, "ARN": arn}


def parse(**fields):
    return parse_record(record(**fields), UTC_HOURS)


# --- key ---------------------------------------------------------------------------------------


def test_the_key_is_the_resource_typed_as_a_kms_key_over_every_other_source():
    event = parse(
        resources=[typed(f"arn:aws:kms:{REGION}:{OWNER}:alias/app", "AWS::KMS::Alias"), untyped(OTHER_KEY), typed(KEY)],
        requestParameters={"keyId": OTHER_KEY},
        responseElements={"keyMetadata": {"arn": OTHER_KEY}},
    )

    assert event.key == KEY


def test_of_several_typed_keys_the_first_is_the_events_key():
    # ReEncrypt lists "the source KMS key and the destination KMS key, in that order"
    # (https://docs.aws.amazon.com/kms/latest/developerguide/ct-reencrypt.html).
    event = parse(eventName="ReEncrypt", resources=[typed(KEY), typed(OTHER_KEY)])

    assert event.key == KEY


def test_an_untyped_resource_key_arn_counts_when_no_resource_is_typed():
    # Records older than the resources[].type field: the ARN of the key actually used.
    assert parse(resources=[untyped(KEY)], requestParameters={"keyId": "alias/app"}).key == KEY


def test_an_untyped_resource_that_is_not_a_key_arn_is_not_taken_for_a_key():
    event = parse(resources=[untyped(f"arn:aws:kms:{REGION}:{OWNER}:alias/app")], requestParameters={"keyId": KEY})

    assert event.key == KEY


def test_a_blank_resource_arn_falls_through_to_the_request_key_id():
    event = parse(resources=[typed(""), {"type": "AWS::KMS::Key", "ARN": None}], requestParameters={"keyId": KEY})

    assert event.key == KEY


def test_a_request_key_arn_is_the_key_when_resources_name_none():
    assert parse(resources=DROP, requestParameters={"keyId": KEY}).key == KEY


def test_a_bare_key_id_becomes_an_arn_in_the_events_region_and_the_recipient_account():
    # Cross-account: the recipient (key owner) account, not the caller's, owns a bare key id.
    event = parse(userIdentity={"type": "AWSAccount", "accountId": OTHER}, requestParameters={"keyId": KEY_ID})

    assert event.key == KEY


def test_a_multi_region_key_id_becomes_an_arn_too():
    assert parse(requestParameters={"keyId": MRK_ID}).key == f"arn:aws:kms:{REGION}:{OWNER}:key/{MRK_ID}"


@pytest.mark.parametrize(
    ("region", "partition"),
    [("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov"), ("ap-southeast-2", "aws")],
)
def test_a_bare_key_id_gets_the_partition_of_its_region(region, partition):
    assert parse(awsRegion=region, requestParameters={"keyId": KEY_ID}).key == (
        f"arn:{partition}:kms:{region}:{OWNER}:key/{KEY_ID}"
    )


@pytest.mark.parametrize("region", ["", "eu-west-1\n", "eu-west-1:x", "../../etc"])
def test_a_bare_key_id_in_a_malformed_region_is_shown_as_given_not_made_into_an_arn(region):
    assert parse(awsRegion=region, requestParameters={"keyId": KEY_ID}).key == KEY_ID


def test_the_created_keys_arn_comes_from_the_response_when_the_request_names_no_key():
    event = parse(
        eventName="CreateKey",
        requestParameters={"keySpec": "SYMMETRIC_DEFAULT"},
        responseElements={"keyMetadata": {"keyId": KEY_ID, "arn": KEY}},
    )

    assert event.key == KEY


@pytest.mark.parametrize("given", ["alias/app-backend", f"arn:aws:kms:{REGION}:{OWNER}:alias/app-backend"])
def test_an_alias_is_shown_as_given_until_the_inventory_resolves_it(given):
    assert parse(requestParameters={"keyId": given}).key == given


def test_surrounding_whitespace_in_the_key_id_is_ignored():
    assert parse(requestParameters={"keyId": f"  {KEY} "}).key == KEY


@pytest.mark.parametrize("event_name", ["ListKeys", "ListAliases"])
def test_events_about_no_key_are_kept_with_an_empty_key(event_name):
    event = parse(eventName=event_name, requestParameters={"limit": 100}, resources=DROP)

    assert event.key == ""
    assert event.event_name == event_name


# --- principal, session and service ------------------------------------------------------------


def test_an_assumed_role_is_counted_as_its_role_with_the_session_kept_apart():
    event = parse(userIdentity=assumed_role(session="i-0abc"))

    assert (event.principal, event.principal_type, event.session_name) == (ROLE, "AssumedRole", "i-0abc")
    assert event.caller_account_id == OWNER


def test_an_assumed_role_without_a_session_issuer_falls_back_to_the_session_arn():
    identity = assumed_role(session="etl")
    del identity["sessionContext"]

    event = parse(userIdentity=identity)

    assert event.principal == f"arn:aws:sts::{OWNER}:assumed-role/app-backend/etl"
    assert event.session_name == "etl"


def test_an_assumed_role_acting_through_a_service_keeps_the_role_as_principal_and_the_service_apart():
    event = parse(userIdentity=assumed_role(invokedBy="s3.amazonaws.com"))

    assert (event.principal, event.service) == (ROLE, "s3.amazonaws.com")


@pytest.mark.parametrize(
    ("kind", "arn"),
    [
        ("IAMUser", f"arn:aws:iam::{OWNER}:user/alice"),
        ("Root", f"arn:aws:iam::{OWNER}:root"),
        ("FederatedUser", f"arn:aws:sts::{OWNER}:federated-user/bob"),
        ("IdentityCenterUser", f"arn:aws:identitystore::{OWNER}:user/9067-example"),
    ],
)
def test_users_root_federated_and_identity_center_users_are_their_arn(kind, arn):
    event = parse(userIdentity={"type": kind, "principalId": "AIDAEXAMPLE", "arn": arn, "accountId": OWNER})

    assert (event.principal, event.principal_type, event.session_name, event.service) == (arn, kind, "", "")


def test_an_identity_center_user_without_an_arn_is_the_user_it_acts_for():
    identity = {
        "type": "IdentityCenterUser",
        "accountId": OWNER,
        "onBehalfOf": {
            "userId": "544894e8-80c1-707f-60e3-3ba6510dfac1",
            "identityStoreArn": f"arn:aws:identitystore::{OWNER}:identitystore/d-9067230000",
        },
        "credentialId": "EXAMPLEVHULjJdTUdPJfofVa1sufHDoj7aYcOYcxFVllWR_Whr1fEXAMPLE",
    }

    event = parse(userIdentity=identity)

    assert (event.principal, event.principal_type) == ("544894e8-80c1-707f-60e3-3ba6510dfac1", "IdentityCenterUser")
    with pytest.raises(ParseError, match="onBehalfOf"):
        parse(userIdentity={**identity, "onBehalfOf": "someone"})


def test_a_user_without_an_arn_is_its_principal_id():
    assert parse(userIdentity={"type": "IAMUser", "principalId": "AIDAEXAMPLE"}).principal == "AIDAEXAMPLE"


def test_another_account_is_its_account_id():
    event = parse(userIdentity={"type": "AWSAccount", "principalId": "AROAEXAMPLE:app", "accountId": OTHER})

    assert (event.principal, event.principal_type, event.caller_account_id) == (OTHER, "AWSAccount", OTHER)
    assert event.recipient_account_id == OWNER


def test_an_aws_service_is_the_service_that_invoked_the_call():
    event = parse(userIdentity={"type": "AWSService", "invokedBy": "secretsmanager.amazonaws.com"})

    assert (event.principal, event.principal_type) == ("secretsmanager.amazonaws.com", "AWSService")
    assert (event.service, event.caller_account_id) == ("secretsmanager.amazonaws.com", "")


def test_an_identity_with_no_type_but_invoked_by_is_that_service():
    # KMS's own DeleteKey and RotateKey: {"accountId", "invokedBy": "AWS Internal"}, no type.
    event = parse(userIdentity={"accountId": OWNER, "invokedBy": "AWS Internal"}, eventType="AwsServiceEvent")

    assert (event.principal, event.principal_type, event.service) == ("AWS Internal", "AWSService", "AWS Internal")


@pytest.mark.parametrize(
    ("identity", "principal"),
    [
        ({"type": "SAMLUser", "principalId": "saml:alice", "userName": "alice"}, "saml:alice"),
        ({"type": "WebIdentityUser", "principalId": "cognito:sub", "arn": "arn:x"}, "arn:x"),
        ({"type": "Unknown", "accountId": OWNER}, OWNER),
        ({"type": "Role"}, ""),
        ({}, ""),
    ],
)
def test_other_identity_types_are_their_most_specific_identifier(identity, principal):
    event = parse(userIdentity=identity)

    assert (event.principal, event.principal_type) == (principal, identity.get("type", ""))


def test_a_record_without_a_user_identity_has_no_principal():
    event = parse(userIdentity=DROP)

    assert (event.principal, event.principal_type, event.service, event.caller_account_id) == ("", "", "", "")


@pytest.mark.parametrize("account", ["ANONYMOUS_PRINCIPAL", "1234", "111122223333\n", "x" * 5000])
def test_a_caller_account_that_is_not_an_account_id_is_left_empty(account):
    event = parse(userIdentity={"type": "AWSAccount", "accountId": account})

    assert event.caller_account_id == ""
    assert event.recipient_account_id == OWNER


def test_the_recipient_account_falls_back_to_the_caller_account_on_old_records():
    assert parse(recipientAccountId=DROP, userIdentity=iam_user(OTHER)).recipient_account_id == OTHER


# --- failed ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "failed"),
    [
        ({"errorCode": "AccessDenied", "errorMessage": "User: x is not authorized"}, True),
        ({"errorCode": "InvalidKeyUsageException"}, True),  # a failure without a message
        ({"errorCode": ""}, False),
        ({"errorCode": None}, False),
        ({}, False),
    ],
)
def test_an_event_failed_exactly_when_it_has_a_non_empty_error_code(fields, failed):
    event = parse(**fields)

    assert event.failed is failed
    assert event.error_code == (fields.get("errorCode") or "")
    assert event.error_message == fields.get("errorMessage", "")


# --- after-hours -------------------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("utc", "after_hours"),
    [
        ("2026-11-04T05:59:59", True),
        ("2026-11-04T06:00:00", False),
        ("2026-11-04T12:00:00", False),
        ("2026-11-04T22:59:59", False),
        ("2026-11-04T22:59:59.999999", False),
        ("2026-11-04T23:00:00", True),
        ("2026-11-04T00:00:00", True),
    ],
)
def test_after_hours_is_before_6_or_from_23_on_exactly(utc, after_hours):
    assert UTC_HOURS.is_after_hours(at(utc)) is after_hours


BERLIN = BusinessHours(ZoneInfo("Europe/Berlin"), time(6, 0), time(23, 0))
NEW_YORK = BusinessHours(ZoneInfo("America/New_York"), time(6, 0), time(23, 0))


@pytest.mark.parametrize(
    ("utc", "after_hours"),
    [
        # Saturday 28 March 2026, CET (UTC+1): business hours are 05:00-22:00 UTC.
        ("2026-03-28T04:59:59", True),
        ("2026-03-28T05:00:00", False),
        ("2026-03-28T21:59:59", False),
        ("2026-03-28T22:00:00", True),
        # Sunday 29 March, clocks go forward at 01:00 UTC, CEST (UTC+2): 04:00-21:00 UTC.
        ("2026-03-29T03:59:59", True),
        ("2026-03-29T04:00:00", False),
        ("2026-03-29T20:59:59", False),
        ("2026-03-29T21:00:00", True),
        # Saturday 24 October, still CEST: 04:00-21:00 UTC.
        ("2026-10-24T03:59:59", True),
        ("2026-10-24T04:00:00", False),
        ("2026-10-24T21:00:00", True),
        # Sunday 25 October, clocks go back at 01:00 UTC, CET again: 05:00-22:00 UTC.
        ("2026-10-25T04:59:59", True),
        ("2026-10-25T05:00:00", False),
        ("2026-10-25T21:59:59", False),
        ("2026-10-25T22:00:00", True),
    ],
)
def test_after_hours_follows_berlin_across_both_dst_changes(utc, after_hours):
    assert BERLIN.is_after_hours(at(utc)) is after_hours


@pytest.mark.parametrize(
    ("utc", "after_hours"),
    [
        # Saturday 7 March 2026, EST (UTC-5): 06:00 local is 11:00 UTC, 23:00 local is 04:00 UTC next day.
        ("2026-03-07T10:59:59", True),
        ("2026-03-07T11:00:00", False),
        # Sunday 8 March, clocks go forward at 07:00 UTC, EDT (UTC-4): 06:00 local is 10:00 UTC.
        ("2026-03-08T09:59:59", True),
        ("2026-03-08T10:00:00", False),
        ("2026-03-09T02:59:59", False),
        ("2026-03-09T03:00:00", True),
        # Sunday 1 November, clocks go back at 06:00 UTC, EST: 06:00 local is 11:00 UTC.
        ("2026-11-01T10:59:59", True),
        ("2026-11-01T11:00:00", False),
        ("2026-11-02T03:59:59", False),
        ("2026-11-02T04:00:00", True),
    ],
)
def test_after_hours_follows_new_york_across_both_dst_changes(utc, after_hours):
    assert NEW_YORK.is_after_hours(at(utc)) is after_hours


def test_both_passes_through_the_repeated_autumn_hour_are_judged_by_their_local_time():
    night_shift = BusinessHours(ZoneInfo("America/New_York"), time(1, 0), time(2, 0))

    assert night_shift.is_after_hours(at("2026-11-01T05:30:00")) is False  # 01:30 EDT
    assert night_shift.is_after_hours(at("2026-11-01T06:30:00")) is False  # 01:30 EST, an hour later
    assert night_shift.is_after_hours(at("2026-11-01T07:00:00")) is True  # 02:00 EST


@pytest.mark.parametrize(
    ("utc", "weekends_after_hours", "after_hours"),
    [
        ("2026-11-07T12:00:00", False, False),  # Saturday
        ("2026-11-07T12:00:00", True, True),
        ("2026-11-08T12:00:00", True, True),  # Sunday
        ("2026-11-09T12:00:00", True, False),  # Monday
        ("2026-11-06T12:00:00", True, False),  # Friday
        ("2026-11-07T03:00:00", False, True),  # a Saturday night is after hours either way
    ],
)
def test_weekends_are_after_hours_only_when_configured(utc, weekends_after_hours, after_hours):
    hours = BusinessHours(ZoneInfo("UTC"), time(6, 0), time(23, 0), weekends_after_hours)

    assert hours.is_after_hours(at(utc)) is after_hours


def test_the_weekend_is_the_local_weekend():
    auckland = BusinessHours(ZoneInfo("Pacific/Auckland"), time(6, 0), time(23, 0), weekends_after_hours=True)
    utc = BusinessHours(ZoneInfo("UTC"), time(6, 0), time(23, 0), weekends_after_hours=True)

    # Friday 22:30 UTC is Saturday 11:30 in Auckland (NZDT, UTC+13).
    assert utc.is_after_hours(at("2026-11-06T22:30:00")) is False
    assert auckland.is_after_hours(at("2026-11-06T22:30:00")) is True
    # Sunday 23:30 UTC is Monday 12:30 in Auckland.
    assert utc.is_after_hours(at("2026-11-08T23:30:00")) is True
    assert auckland.is_after_hours(at("2026-11-08T23:30:00")) is False


def test_business_hours_come_from_the_settings(settings):
    settings.KMSDASH_TIME_ZONE = "Europe/Berlin"
    settings.KMSDASH_BUSINESS_HOURS = (time(8, 30), time(18, 0))
    settings.KMSDASH_WEEKENDS_AFTER_HOURS = True

    assert BusinessHours.from_settings() == BusinessHours(ZoneInfo("Europe/Berlin"), time(8, 30), time(18, 0), True)


def test_utc_business_hours_judge_a_time_given_with_another_offset_in_utc():
    weekend_hours = BusinessHours(ZoneInfo("UTC"), time(6, 0), time(23, 0), weekends_after_hours=True)
    early = datetime(2026, 11, 4, 7, 30, tzinfo=timezone(timedelta(hours=2)))  # 05:30 UTC, a Wednesday
    saturday = datetime(2026, 11, 7, 1, 0, tzinfo=timezone(timedelta(hours=2)))  # Friday 23:00 UTC

    assert UTC_HOURS.is_after_hours(early) is UTC_HOURS.is_after_hours(early.astimezone(UTC)) is True
    assert UTC_HOURS.is_after_hours(early + timedelta(hours=1)) is False
    assert weekend_hours.is_after_hours(saturday - timedelta(hours=1)) is False  # Friday 22:00 UTC
    assert weekend_hours.is_after_hours(datetime(2026, 11, 7, 12, 0, tzinfo=UTC)) is True  # Saturday noon


def test_the_parser_judges_after_hours_with_the_hours_it_is_given():
    rec = record(eventTime="2026-11-04T06:30:00Z")  # a Wednesday; 07:30 in Berlin

    assert parse_record(rec, UTC_HOURS).after_hours is False
    assert parse_record(rec, BusinessHours(ZoneInfo("Europe/Berlin"), time(8, 0), time(18, 0))).after_hours is True


# --- time --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-11-02T12:00:00Z", "2026-11-02T12:00:00"),
        ("2026-11-02T12:00:00.250Z", "2026-11-02T12:00:00.250"),
        ("2026-11-02T13:00:00+01:00", "2026-11-02T12:00:00"),
        ("2026-11-02T12:00:00", "2026-11-02T12:00:00"),  # no offset: CloudTrail times are UTC
    ],
)
def test_event_times_are_aware_utc(text, utc):
    event = parse(eventTime=text)

    assert event.event_time == at(utc)
    assert event.event_time.tzinfo is UTC
    assert event.day == at(utc).date()


def test_the_day_is_the_utc_day_whatever_the_business_time_zone():
    event = parse_record(record(eventTime="2026-11-02T23:30:00Z"), BERLIN)  # 00:30 on the 3rd in Berlin

    assert event.day.isoformat() == "2026-11-02"


# --- everything else that is kept ---------------------------------------------------------------


def test_every_other_field_is_kept_as_logged():
    event = parse(
        userIdentity=assumed_role(OTHER),
        sourceIPAddress="198.51.100.7",
        userAgent="Boto3/1.38.0",
        errorCode="AccessDenied",
        errorMessage="denied",
        readOnly=False,
        eventType="AwsApiCall",
        eventCategory="Management",
        requestID="req-1",
        sharedEventID="5ca1ab1e-0000-4000-8000-0000000000ff",
        vpcEndpointId="vpce-0123456789abcdef0",
        requestParameters={"keyId": KEY, "encryptionContext": {"aws:s3:arn": "arn:aws:s3:::media/a/b.jpg", "x": "1"}},
    )

    assert (event.recipient_account_id, event.caller_account_id, event.region) == (OWNER, OTHER, REGION)
    assert (event.source_ip, event.user_agent) == ("198.51.100.7", "Boto3/1.38.0")
    assert (event.error_code, event.error_message, event.read_only) == ("AccessDenied", "denied", False)
    assert (event.event_type, event.event_category, event.request_id) == ("AwsApiCall", "Management", "req-1")
    assert event.shared_event_id == "5ca1ab1e-0000-4000-8000-0000000000ff"
    assert event.vpc_endpoint_id == "vpce-0123456789abcdef0"
    assert event.encryption_context == {"aws:s3:arn": "arn:aws:s3:::media/a/b.jpg", "x": "1"}
    assert event.s3_bucket == "media"


def test_absent_optional_fields_are_empty_not_null():
    event = parse(
        sourceIPAddress=DROP,
        userAgent=DROP,
        requestID=DROP,
        eventType=DROP,
        eventCategory=DROP,
        awsRegion=DROP,
        readOnly=DROP,
        requestParameters=None,
    )

    assert (event.source_ip, event.user_agent, event.request_id, event.region) == ("", "", "", "")
    assert (event.event_type, event.event_category, event.shared_event_id, event.vpc_endpoint_id) == ("", "", "", "")
    assert (event.read_only, event.encryption_context, event.s3_bucket) == (None, None, "")


@pytest.mark.parametrize(
    ("value", "read_only"),
    [(True, True), (False, False), (None, None), (DROP, None), ("true", True), ("FALSE", False)],
)
def test_read_only_is_a_boolean_or_unknown(value, read_only):
    assert parse(readOnly=value).read_only is read_only


@pytest.mark.parametrize(
    ("context", "bucket", "names_object"),
    [
        ({"aws:s3:arn": "arn:aws:s3:::example_bucket/example_object"}, "example_bucket", True),
        ({"aws:s3:arn": "arn:aws:s3:::example_bucket/a/deep/key.txt"}, "example_bucket", True),
        ({"aws:s3:arn": "arn:aws:s3:::bucket-key-bucket"}, "bucket-key-bucket", False),  # S3 Bucket Key on
        ({"aws:s3:arn": "arn:aws-cn:s3:::cn-bucket/o"}, "cn-bucket", True),
        ({"aws:s3:arn": "arn:aws:dynamodb:eu-west-1:111122223333:table/t"}, "", False),
        ({"aws:s3:arn": "s3://bucket/object"}, "", False),
        ({"aws:ebs:id": "vol-f67bafb2"}, "", False),
        ({}, "", False),
        (None, "", False),
    ],
)
def test_the_s3_bucket_comes_from_an_s3_arn_context(context, bucket, names_object):
    assert s3_bucket_of(context) == bucket
    assert s3_context_names_object(context) is names_object
    request = {"keyId": KEY} if context is None else {"keyId": KEY, "encryptionContext": context}
    assert parse(requestParameters=request).s3_bucket == bucket


# --- which records are kept, ignored or quarantined ----------------------------------------------


@pytest.mark.parametrize("source", ["s3.amazonaws.com", "sts.amazonaws.com", "KMS.amazonaws.com"])
def test_records_from_other_event_sources_are_not_kms_events(source):
    with pytest.raises(NotKmsEvent):
        parse(eventSource=source)


def test_a_future_minor_event_version_with_unknown_fields_is_accepted():
    event = parse(
        eventVersion="1.99",
        brandNewField={"nested": [1, 2, 3]},
        userIdentity={**iam_user(), "newIdentityField": "x"},
    )

    assert event.principal == f"arn:aws:iam::{OWNER}:user/alice"


@pytest.mark.parametrize("version", ["1", "1.0", "1.02", "1.08", "1.11", DROP])
def test_every_version_1_record_is_accepted(version):
    assert parse(eventVersion=version).event_name == "Decrypt"


HUGE = "x" * (1 << 20)
DEEP: dict = {}
_node = DEEP
for _ in range(100_000):
    _node["a"] = {}
    _node = _node["a"]
DEEP_LIST: list = []
for _ in range(100_000):
    DEEP_LIST = [DEEP_LIST]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"eventVersion": "2.0"}, "eventVersion"),
        ({"eventVersion": "2"}, "eventVersion"),
        ({"eventVersion": "10.1"}, "eventVersion"),
        ({"eventVersion": 1.08}, "eventVersion"),
        ({"eventVersion": "one"}, "eventVersion"),
        ({"eventVersion": ""}, "eventVersion"),
        ({"eventVersion": DEEP_LIST}, "eventVersion"),
        ({"eventVersion": 10**5000}, "eventVersion"),
        ({"eventSource": DROP}, "eventSource"),
        ({"eventSource": 7}, "eventSource"),
        ({"eventID": DROP}, "eventID"),
        ({"eventID": "   "}, "eventID"),
        ({"eventID": 42}, "eventID"),
        ({"eventID": "e" * 65}, "eventID"),
        ({"eventTime": DROP}, "eventTime"),
        ({"eventTime": 1730548800}, "eventTime"),
        ({"eventTime": "yesterday"}, "eventTime"),
        ({"eventTime": "0001-01-01T00:00:00+01:00"}, "eventTime"),  # before datetime.min in UTC
        ({"eventTime": "9999-12-31T23:00:00Z"}, "eventTime"),  # past datetime.max in Auckland
        ({"eventName": DROP}, "eventName"),
        ({"eventName": ["Decrypt"]}, "eventName"),
        ({"userIdentity": "alice"}, "userIdentity"),
        ({"userIdentity": [iam_user()]}, "userIdentity"),
        ({"userIdentity": {**iam_user(), "arn": 42}}, "userIdentity.arn"),
        ({"userIdentity": {**iam_user(), "type": 1}}, "userIdentity.type"),
        ({"userIdentity": {**assumed_role(), "sessionContext": "x"}}, "sessionContext"),
        ({"userIdentity": {**assumed_role(), "sessionContext": {"sessionIssuer": {"arn": 1}}}}, "sessionIssuer.arn"),
        ({"userIdentity": {"type": "AWSService", "invokedBy": 5}}, "invokedBy"),
        ({"requestParameters": ["keyId"]}, "requestParameters"),
        ({"requestParameters": {"keyId": 1234}}, "keyId"),
        ({"responseElements": "ok"}, "responseElements"),
        ({"responseElements": {"keyMetadata": "x"}}, "keyMetadata"),
        ({"responseElements": {"keyMetadata": {"arn": 1}}}, "keyMetadata.arn"),
        ({"resources": {"ARN": KEY}}, "resources"),
        ({"resources": KEY}, "resources"),
        ({"resources": [KEY]}, "resources[0]"),
        ({"resources": [{"ARN": 1, "type": "AWS::KMS::Key"}]}, "resources[0].ARN"),
        ({"resources": [typed(KEY), "x"]}, "resources[1]"),
        ({"resources": [typed(KEY), {"ARN": KEY, "type": 7}]}, "resources[1].type"),
        ({"requestParameters": {"encryptionContext": "Department=Engineering"}}, "encryptionContext"),
        ({"requestParameters": {"encryptionContext": ["a"]}}, "encryptionContext"),
        ({"requestParameters": {"encryptionContext": {"n": 1}}}, "encryptionContext"),
        ({"requestParameters": {"encryptionContext": {"n": {"deeper": "x"}}}}, "encryptionContext"),
        ({"requestParameters": {"encryptionContext": DEEP}}, "nested deeper"),
        ({"additionalEventData": DEEP}, "nested deeper"),
        ({"readOnly": 1}, "readOnly"),
        ({"readOnly": "yes"}, "readOnly"),
        (
            {"recipientAccountId": DROP, "userIdentity": {"type": "AWSService", "invokedBy": "s3.amazonaws.com"}},
            "recipientAccountId",
        ),
        ({"recipientAccountId": "12345"}, "recipientAccountId"),
        ({"recipientAccountId": 111122223333}, "recipientAccountId"),
        ({"recipientAccountId": "111122223333\n"}, "recipientAccountId"),
        ({"recipientAccountId": "١١١١٢٢٢٢٣٣٣٣"}, "recipientAccountId"),  # Arabic-Indic digits
        ({"userAgent": 1.5}, "userAgent"),
        ({"sourceIPAddress": ["203.0.113.10"]}, "sourceIPAddress"),
        ({"errorCode": 403}, "errorCode"),
        ({"errorMessage": {"text": "x"}}, "errorMessage"),
        ({"awsRegion": 1}, "awsRegion"),
        ({"requestID": 7}, "requestID"),
        ({"sharedEventID": True}, "sharedEventID"),
        ({"vpcEndpointId": 0}, "vpcEndpointId"),
        ({"eventType": []}, "eventType"),
        ({"eventCategory": {}}, "eventCategory"),
    ],
)
def test_a_malformed_record_raises_parse_error_naming_the_problem(fields, reason):
    hours = BusinessHours(ZoneInfo("Pacific/Auckland"), time(6, 0), time(23, 0))
    with pytest.raises(ParseError, match=reason.replace("[", r"\[").replace("]", r"\]")) as caught:
        parse_record(record(**fields), hours)
    assert "\x00" not in str(caught.value) and len(str(caught.value)) < 200


def nested(levels: int) -> dict | list:
    value: dict | list = {"leaf": "x"}
    for level in range(levels - 1):
        value = [value] if level % 2 else {"a": value}
    return value


def test_nesting_is_accepted_up_to_64_levels_and_refused_beyond():
    # The record object is the first level.
    assert parse(additionalEventData=nested(63)).event_name == "Decrypt"
    with pytest.raises(ParseError, match="nested deeper than 64"):
        parse(additionalEventData=nested(64))


def bare_record(**fields) -> dict:
    """A record with no container but itself and those given: each bracket of its text is a level."""
    return {
        "eventSource": "kms.amazonaws.com",
        "eventID": "e-1",
        "eventTime": "2026-11-02T12:00:00Z",
        "eventName": "Decrypt",
        "recipientAccountId": OWNER,
        **fields,
    }


@pytest.mark.parametrize(("levels", "accepted"), [(63, True), (64, False)])
def test_the_records_json_text_decides_the_depth_exactly_as_walking_the_record_does(levels, accepted):
    rec = bare_record(additionalEventData=nested(levels))
    text = rawcodec.dumps(rec)
    assert text.count(b"{") + text.count(b"[") == levels + 1  # the tightest case: no bracket to spare

    for json_text in (None, text):
        if accepted:
            assert parse_record(rec, json_text=json_text).event_name == "Decrypt"
        else:
            with pytest.raises(ParseError, match="nested deeper than 64"):
                parse_record(rec, json_text=json_text)


def test_a_shallow_json_text_spares_walking_the_record_and_no_text_does_not(monkeypatch):
    def walked(value, allowed):
        raise AssertionError("walked")

    rec = record(resources=[typed(KEY)])
    monkeypatch.setattr(cloudtrail, "_deeper_than", walked)

    assert parse_record(rec, json_text=rawcodec.dumps(rec)).key == KEY
    with pytest.raises(AssertionError, match="walked"):
        parse_record(rec)


def test_brackets_inside_strings_count_so_they_can_only_make_the_walk_run():
    rec = record(userAgent="{[" * 100, requestParameters={"keyId": KEY, "encryptionContext": {"[": "{"}})

    assert not cloudtrail._is_shallow_json(rawcodec.dumps(rec))
    assert parse_record(rec, json_text=rawcodec.dumps(rec)) == parse_record(rec)
    assert cloudtrail._is_shallow_json(b"[" * 32 + b"{" * 32)
    assert not cloudtrail._is_shallow_json(b"[" * 32 + b"{" * 33)


def all_paths(value, prefix=()):
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for step, child in items:
        yield (*prefix, step)
        yield from all_paths(child, (*prefix, step))


RICH_RECORD = record(
    userIdentity=assumed_role(invokedBy="s3.amazonaws.com"),
    requestParameters={"keyId": KEY, "encryptionContext": {"aws:s3:arn": "arn:aws:s3:::b/o"}},
    responseElements={"keyMetadata": {"arn": KEY}},
    resources=[typed(KEY)],
    errorCode="AccessDenied",
    errorMessage="denied",
    sharedEventID="s",
    vpcEndpointId="vpce-1",
)


# Every path the rules read in RICH_RECORD, whichever rule decides; the rest is kept only in the raw record.
READ_PATHS = {
    *[(name,) for name in RICH_RECORD if name != "managementEvent"],
    *[("userIdentity", name) for name in ("type", "invokedBy", "arn", "principalId", "accountId", "sessionContext")],
    ("userIdentity", "sessionContext", "sessionIssuer"),
    ("userIdentity", "sessionContext", "sessionIssuer", "arn"),
    ("requestParameters", "keyId"),
    ("requestParameters", "encryptionContext"),
    ("requestParameters", "encryptionContext", "aws:s3:arn"),
    ("responseElements", "keyMetadata"),
    ("responseElements", "keyMetadata", "arn"),
    ("resources", 0),
    ("resources", 0, "ARN"),
    ("resources", 0, "type"),
}


@pytest.mark.parametrize("path", list(all_paths(RICH_RECORD)), ids=lambda path: ".".join(map(str, path)))
@pytest.mark.parametrize("hostile", [DEEP_LIST, 10**5000], ids=["deep-list", "huge-int"])
def test_a_hostile_value_anywhere_in_a_record_raises_parse_error(path, hostile):
    rec = copy.deepcopy(RICH_RECORD)
    parent = rec
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = hostile

    if hostile is DEEP_LIST or path in READ_PATHS:
        with pytest.raises(ParseError):
            parse_record(rec)
    else:
        parse_record(rec)  # a number where the parser never looks is harmless


@pytest.mark.parametrize("value", [None, [], "record", 42])
def test_a_record_that_is_not_an_object_raises_parse_error(value):
    with pytest.raises(ParseError):
        parse_record(value)


# --- JSON text (LookupEvents' CloudTrailEvent) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"eventID": "\xff\xfe"}', "UTF-8"),
        ('{"eventID": ', "invalid JSON"),
        ("", "invalid JSON"),
        ('{"a": NaN}', "invalid JSON"),
        ('{"a": -Infinity}', "invalid JSON"),
        ("[" * 100_000 + "]" * 100_000, "JSON"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "JSON"),
        ('[{"eventID": "x"}]', "object"),
        ('"a string"', "object"),
    ],
)
def test_undecodable_record_text_raises_parse_error(text, reason):
    with pytest.raises(ParseError, match=reason):
        loads_record(text)


def test_record_text_decodes_from_bytes_or_str():
    rec = record()

    assert loads_record(json.dumps(rec)) == loads_record(json.dumps(rec).encode()) == rec


# --- hostile text ------------------------------------------------------------------------------


def test_nul_characters_are_replaced_not_stored():
    event = parse(
        userAgent="curl\x00/8",
        errorCode="Access\x00Denied",
        errorMessage="\x00" * 3,
        userIdentity=iam_user(name="ali\x00ce"),
        requestParameters={"keyId": KEY, "encryptionContext": {"k\x00": "v\x00"}},
    )

    assert event.user_agent == "curl\ufffd/8"
    assert event.error_code == "Access\ufffdDenied"
    assert event.error_message == "\ufffd" * 3
    assert event.principal == f"arn:aws:iam::{OWNER}:user/ali\ufffdce"
    assert event.encryption_context == {"k\ufffd": "v\ufffd"}


def test_lone_surrogates_are_replaced_so_the_text_encodes():
    # Valid JSON: a \ud800 escape with no partner decodes to a lone surrogate.
    text = json.dumps(
        record(
            userAgent="a\ud800b",
            errorMessage="\udfff",
            requestParameters={
                "keyId": KEY,
                "encryptionContext": {"\udc80": "\ud83d"},
            },
        )
    )
    assert "\\ud800" in text

    event = parse_record(loads_record(text))

    assert (event.user_agent, event.error_message) == ("a\ufffdb", "\ufffd")
    assert event.encryption_context == {"\ufffd": "\ufffd"}
    assert event.user_agent.encode("utf-8") == "a\ufffdb".encode()


def test_a_nul_or_lone_surrogate_only_in_the_event_id_or_the_context_is_replaced_too():
    event = parse(eventID="id\x00", requestParameters={"keyId": KEY, "encryptionContext": {"k": "v\ud800"}})

    assert event.event_id == "id\ufffd"
    assert event.encryption_context == {"k": "v\ufffd"}
    assert event.user_agent == "aws-sdk-java/2.20"


def test_storable_text_beyond_ascii_is_kept_as_it_came():
    context = {"Abteilung": "Größe", "emoji": "\U0001f600"}
    event = parse(userAgent="agent-é 日本 \U0001f600", requestParameters={"keyId": KEY, "encryptionContext": context})

    assert event.user_agent == "agent-é 日本 \U0001f600"
    assert event.encryption_context == context


def test_the_encryption_context_is_the_events_own_copy():
    rec = record(requestParameters={"keyId": KEY, "encryptionContext": {"k": "v"}})
    event = parse_record(rec)
    rec["requestParameters"]["encryptionContext"]["k"] = "changed"

    assert event.encryption_context == {"k": "v"}


def test_events_compare_and_hash_by_their_values():
    rec = record()
    first, second = parse_record(rec), parse_record(copy.deepcopy(rec))

    assert first == second and first is not second
    assert hash(first) == hash(second)
    assert dataclasses.replace(first, event_name="Encrypt") != first


# Where each limited text field comes from, and a record putting 1 MiB of text there.
HUGE_FIELDS = {
    "event_name": {"eventName": HUGE},
    "region": {"awsRegion": HUGE},
    "key": {"requestParameters": {"keyId": "alias/" + HUGE}},
    "principal": {"userIdentity": {"type": "IAMUser", "arn": HUGE}},
    "principal_type": {"userIdentity": {"type": HUGE, "arn": "arn:x"}},
    "session_name": {"userIdentity": assumed_role(session=HUGE)},
    "service": {"userIdentity": {"type": "AWSService", "invokedBy": HUGE}},
    "source_ip": {"sourceIPAddress": HUGE},
    "user_agent": {"userAgent": HUGE},
    "error_code": {"errorCode": HUGE},
    "error_message": {"errorMessage": HUGE},
    "event_type": {"eventType": HUGE},
    "event_category": {"eventCategory": HUGE},
    "request_id": {"requestID": HUGE},
    "shared_event_id": {"sharedEventID": HUGE},
    "vpc_endpoint_id": {"vpcEndpointId": HUGE},
    "s3_bucket": {"requestParameters": {"encryptionContext": {"aws:s3:arn": "arn:aws:s3:::" + HUGE}}},
}


def test_every_limited_field_has_a_huge_input_case():
    assert set(HUGE_FIELDS) == set(LIMITS)


@pytest.mark.parametrize("name", sorted(HUGE_FIELDS))
def test_a_mebibyte_of_text_is_cut_to_its_column_limit_never_rejected(name):
    event = parse(**copy.deepcopy(HUGE_FIELDS[name]))

    value = getattr(event, name)
    assert len(value) == LIMITS[name]
    assert value.endswith("x" * 16)


def test_the_account_pattern_accepts_only_twelve_ascii_digits():
    assert ACCOUNT_RE.match(OWNER)
    for bad in ("11112222333", "1111222233334", "111122223333\n", "١١١١٢٢٢٢٣٣٣٣", "11112222333a"):
        assert not ACCOUNT_RE.match(bad), bad


# --- what the parser returns fits the event table ------------------------------------------------


def test_the_limits_are_the_event_columns_lengths():
    for name, limit in LIMITS.items():
        field = Event._meta.get_field(name)
        assert field.max_length in (limit, None), name
        assert field.max_length is not None or field.get_internal_type() == "TextField", name


@pytest.mark.django_db
def test_a_hostile_record_parses_into_a_row_the_database_accepts():
    context = {"\x00k": "\udfff", "aws:s3:arn": "arn:aws:s3:::b\x00/o"}
    hostile = [record(**copy.deepcopy(fields)) for fields in HUGE_FIELDS.values()]
    hostile.append(
        record(
            userAgent="\x00\ud800",
            errorMessage="a\x00b",
            userIdentity=iam_user(name="\x00"),
            requestParameters={"keyId": KEY, "encryptionContext": context},
        )
    )
    for rec in hostile:
        Event.objects.create(**dataclasses.asdict(parse_record(rec)))

    stored = Event.objects.get(user_agent="\ufffd\ufffd")
    assert stored.encryption_context == {"\ufffdk": "\ufffd", "aws:s3:arn": "arn:aws:s3:::b\ufffd/o"}
    assert stored.s3_bucket == "b\ufffd"
    assert Event.objects.count() == len(hostile)
