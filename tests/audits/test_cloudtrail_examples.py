"""The 24 KMS CloudTrail examples (AWS documentation plus three synthetic cross-account records),
each checked field by field against values read off the record by hand.

Quirks of the documentation examples, pinned on purpose:
- examples 2 and 3 share one eventID, so they deduplicate into one event;
- several log awsRegion us-east-1 for a us-west-2 key: the key comes from resources[], so it
  stays in us-west-2 while the event's region stays us-east-1;
- examples 4 and 5 give a bare key id in us-east-1 but name the us-west-2 key in an untyped
  resources[] entry (records older than the type field), which wins;
- examples 19 and 20 (DynamoDB) have a blank resources[].ARN and no key id: key '';
- old records lack readOnly/managementEvent/eventCategory.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from audits.cloudtrail import BusinessHours, loads_record, parse_record

FIXTURE = Path(__file__).parent / "fixtures" / "kms_cloudtrail_examples.json"
EXAMPLES = {example["example_id"]: example for example in json.loads(FIXTURE.read_text())}

# The default business hours, spelled out so these tests do not lean on the module's defaults.
UTC_HOURS = BusinessHours(ZoneInfo("UTC"), time(6, 0), time(23, 0))

OWNER = "111122223333"
CALLER = "444455556666"
KEY = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MRK = "arn:aws:kms:us-west-2:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
WORKMAIL_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1a2b3c4d-5e6f-1a2b-3c4d-5e6f1a2b3c4d"
ALICE = "arn:aws:iam::111122223333:user/Alice"
WORKMAIL_ORG = "arn:aws:workmail:eu-west-1:111122223333:organization/m-c6981ff7642446fa8772ba99c690e455"


def t(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


# What every field of the Alice (IAMUser) documentation examples holds unless the example says otherwise.
ALICE_DEFAULTS = {
    "recipient_account_id": OWNER,
    "principal": ALICE,
    "principal_type": "IAMUser",
    "session_name": "",
    "service": "",
    "caller_account_id": OWNER,
    "source_ip": "192.0.2.0",
    "user_agent": "AWS Internal",
    "error_code": "",
    "error_message": "",
    "event_type": "AwsApiCall",
    "event_category": "",
    "shared_event_id": "",
    "vpc_endpoint_id": "",
    "s3_bucket": "",
    "own": False,  # parsed without OwnCalls: no call is kmsdash's own
}

CROSS_ACCOUNT_DEFAULTS = {
    "event_time": t("2025-05-20T20:45:00"),
    "event_name": "Decrypt",
    "region": "us-west-2",
    "key": KEY,
    "source_ip": "198.51.100.7",
    "user_agent": "Boto3/1.38.0 md/Botocore#1.38.0 ua/2.1 os/linux",
    "read_only": True,
    "event_type": "AwsApiCall",
    "event_category": "Management",
    "encryption_context": {"Department": "Engineering"},
    "vpc_endpoint_id": "",
    "s3_bucket": "",
    "after_hours": False,
    "own": False,
}

EXPECTED = {
    1: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",
        "event_id": "91235988-eb87-476a-ac2c-0cdc244e6dca",
        "event_time": t("2022-07-14T20:17:42"),
        "event_name": "Encrypt",
        "region": "us-east-1",
        "key": KEY,  # untyped resources[] entry, same ARN as keyId
        "read_only": True,
        "encryption_context": {"Department": "Engineering"},
        "request_id": "f3423043-63bc-11e4-bc2b-4198b6150d5c",
        "after_hours": False,
    },
    2: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",
        "event_id": "abcde202-ba1a-467c-b4ba-f729d45ae521",
        "event_time": t("2020-07-27T22:58:24"),
        "event_name": "Decrypt",
        "region": "us-west-2",
        "key": KEY,
        "read_only": True,
        "encryption_context": {"Department": "Engineering", "Project": "Alpha"},
        "request_id": "12345126-30d5-4b28-98b9-9153da559963",
        "after_hours": False,  # 22:58:24 is before 23:00
    },
    3: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",
        "event_id": "abcde202-ba1a-467c-b4ba-f729d45ae521",
        "event_time": t("2022-11-24T18:57:43"),
        "event_name": "Decrypt",
        "region": "us-west-2",
        "key": KEY,
        "error_code": "IncorrectKeyException",
        "error_message": "The key ID in the request does not identify a CMK that can perform this operation.",
        "read_only": True,
        "encryption_context": {"Department": "Engineering", "Project": "Alpha"},
        "request_id": "22345126-30d5-4b28-98b9-9153da559963",
        "after_hours": False,
    },
    4: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",
        "event_id": "a9dea4f9-8395-46c0-942c-f509c02c2b71",
        "event_time": t("2014-11-04T00:52:40"),
        "event_name": "GenerateDataKey",
        "region": "us-east-1",
        "key": KEY,  # the untyped resources[] ARN, not the bare id made into a us-east-1 ARN
        "read_only": True,
        "encryption_context": {"Department": "Engineering", "Project": "Alpha"},
        "request_id": "e0eb83e3-63bc-11e4-bc2b-4198b6150d5c",
        "after_hours": True,
    },
    5: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",
        "event_id": "f7734272-9ec5-4c80-9f36-528ebbe35e4a",
        "event_time": t("2014-11-04T00:52:23"),
        "event_name": "GenerateDataKeyWithoutPlaintext",
        "region": "us-east-1",
        "key": KEY,
        "error_code": "InvalidKeyUsageException",
        "error_message": "",
        "read_only": True,
        "encryption_context": {"Project": "Alpha"},
        "request_id": "d6b8e411-63bc-11e4-bc2b-4198b6150d5c",
        "after_hours": True,
    },
    6: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",
        "event_id": "edb65380-0a3e-4123-bbc8-3d1b7cff49b0",
        "event_time": t("2014-11-05T21:35:47"),
        "event_name": "Decrypt",
        "region": "us-east-1",
        "key": KEY,
        "principal": "arn:aws:iam::111122223333:role/aws:ec2-infrastructure",
        "principal_type": "AssumedRole",
        "session_name": "i-81e2f56c",
        "user_agent": "",  # this record has no userAgent
        "read_only": True,
        "encryption_context": {"aws:ebs:id": "vol-f67bafb2"},
        "request_id": "b4b27883-6533-11e4-b4d9-751f1761e9e5",
        "after_hours": False,
    },
    7: {
        **ALICE_DEFAULTS,
        "quota_class": "",  # no request-rate quota here
        "event_id": "c1ad79e3-0d3f-402a-b119-d5c31d7c6a6c",
        "event_time": t("2014-11-05T21:35:35"),
        "event_name": "CreateGrant",
        "region": "us-east-1",
        "key": KEY,
        "read_only": False,
        "encryption_context": None,  # constraints.encryptionContextSubset is not the call's context
        "request_id": "41c4b4f7-8bce-4773-bf0e-5ae3bb5cbce2",
        "after_hours": False,
    },
    8: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",
        "event_id": "4bd2a696-d833-48cc-b72c-05e61b608399",
        "event_time": t("2014-11-05T20:50:19"),
        "event_name": "GenerateDataKeyWithoutPlaintext",
        "region": "us-east-1",
        "key": KEY,  # resources[] beats the alias/aws/ebs keyId
        "read_only": True,
        "encryption_context": {"aws:ebs:id": "vol-13439757"},
        "request_id": "create-123456789012-758241111-1415220618",
        "after_hours": False,
    },
    9: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",
        "event_id": "80721262-21a5-49b9-8b63-28740e7ce9c9",
        "event_time": t("2015-09-10T23:58:18"),
        "event_name": "GenerateDataKey",
        "region": "us-west-2",
        "key": KEY,
        "principal": "arn:aws:iam::111122223333:role/Admins",
        "principal_type": "AssumedRole",
        "session_name": "example-user",
        "service": "internal.amazonaws.com",
        "source_ip": "internal.amazonaws.com",
        "user_agent": "internal.amazonaws.com",
        "read_only": True,
        "encryption_context": {"aws:s3:arn": "arn:aws:s3:::example_bucket/example_object"},
        "request_id": "cea04450-5817-11e5-85aa-97ce46071236",
        "s3_bucket": "example_bucket",
        "after_hours": True,
    },
    10: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",
        "event_id": "ae551b19-8a09-4cfc-a249-205ddba330e3",
        "event_time": t("2015-09-10T23:58:39"),
        "event_name": "Decrypt",
        "region": "us-west-2",
        "key": KEY,
        "principal": "arn:aws:iam::111122223333:role/Admins",
        "principal_type": "AssumedRole",
        "session_name": "example-user",
        "service": "internal.amazonaws.com",
        "source_ip": "internal.amazonaws.com",
        "user_agent": "internal.amazonaws.com",
        "read_only": True,
        "encryption_context": {"aws:s3:arn": "arn:aws:s3:::example_bucket/example_object"},
        "request_id": "db750745-5817-11e5-93a6-5b87e27d91a0",
        "s3_bucket": "example_bucket",
        "after_hours": True,
    },
    11: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",  # an AWS service with the account's own key
        "event_id": "ea9fd966-98e9-4b7b-b377-6e5a397a71de",
        "event_time": t("2019-02-20T11:51:10"),
        "event_name": "Decrypt",
        "region": "eu-west-1",
        "key": WORKMAIL_KEY,
        "principal": "workmail.eu-west-1.amazonaws.com",
        "principal_type": "AWSService",
        "service": "workmail.eu-west-1.amazonaws.com",
        "caller_account_id": "",  # an AWSService identity has no accountId
        "source_ip": "workmail.eu-west-1.amazonaws.com",
        "user_agent": "workmail.eu-west-1.amazonaws.com",
        "read_only": True,
        "encryption_context": {"aws:workmail:arn": WORKMAIL_ORG},
        "request_id": "4a32dda1-34d9-4100-9718-674b8e0782c9",
        "shared_event_id": "241e1e5b-ff64-427a-a5b3-7949164d0214",
        "after_hours": False,
    },
    12: {
        **ALICE_DEFAULTS,
        "quota_class": "",
        "event_id": "3c4226b0-1e81-48a8-a333-7fa5f3cbd118",
        "event_time": t("2021-03-23T18:58:30"),
        "event_name": "ScheduleKeyDeletion",
        "region": "us-east-1",
        "key": KEY,
        "read_only": False,
        "encryption_context": None,
        "request_id": "ee408f36-ea01-422b-ac14-b0f147c68334",
        "after_hours": False,
    },
    13: {
        **ALICE_DEFAULTS,
        "quota_class": "",
        "event_id": "abcda5f-396d-494c-9380-0c47860df5f1",
        "event_time": t("2021-10-28T17:59:05"),
        "event_name": "ScheduleKeyDeletion",
        "region": "us-west-2",
        "key": MRK,
        "read_only": False,
        "event_category": "Management",
        "encryption_context": None,
        "request_id": "12341411-d846-42a6-a476-b1cbe3011f89",
        "after_hours": False,
    },
    14: {
        **ALICE_DEFAULTS,
        "quota_class": "",
        "event_id": "b25f9cda-74e1-4458-847b-4972a0bf9668",
        "event_time": t("2020-07-31T00:07:00"),
        "event_name": "DeleteKey",
        "region": "us-east-1",
        "key": KEY,
        "principal": "AWS Internal",  # no type, only invokedBy
        "principal_type": "AWSService",
        "service": "AWS Internal",
        "source_ip": "AWS Internal",
        "read_only": False,
        "event_type": "AwsServiceEvent",
        "event_category": "Management",
        "encryption_context": None,
        "request_id": "",  # KMS's own events carry no requestID
        "after_hours": True,
    },
    15: {
        **ALICE_DEFAULTS,
        "quota_class": "",
        "event_id": "5d529779-2d27-42b5-92da-91aaea1fc4b5",
        "event_time": t("2014-11-04T00:53:12"),
        "event_name": "CreateGrant",
        "region": "us-east-1",
        "key": KEY,
        "read_only": False,
        "encryption_context": None,
        "request_id": "f3c08808-63bc-11e4-bc2b-4198b6150d5c",
        "after_hours": True,
    },
    16: {
        **ALICE_DEFAULTS,
        "quota_class": "",
        "event_id": "c217db1f-903f-4a2f-8f88-9580182d6313",
        "event_time": t("2022-09-01T20:06:16"),
        "event_name": "PutKeyPolicy",
        "region": "us-west-2",
        "key": KEY,
        "read_only": False,
        "event_category": "Management",
        "encryption_context": None,
        "request_id": "7bb906fa-dc21-4350-b65c-808ff0f72f55",
        "after_hours": False,
    },
    17: {
        **ALICE_DEFAULTS,
        "quota_class": "",
        "event_id": "6313164c-83aa-4cc3-9e1a-b7c426f7a5b1",
        "event_time": t("2022-09-01T19:31:39"),
        "event_name": "DisableKeyRotation",
        "region": "us-west-2",
        "key": KEY,
        "read_only": False,
        "event_category": "Management",
        "encryption_context": None,
        "request_id": "d6a9351a-ed6e-4581-88d1-2a9a8a538497",
        "after_hours": False,
    },
    18: {
        **ALICE_DEFAULTS,
        "quota_class": "",
        "event_id": "a24b3967-ddad-417f-9b22-2332b918db06",
        "event_time": t("2021-01-14T01:41:59"),
        "event_name": "RotateKey",
        "region": "us-west-2",
        "key": KEY,
        "principal": "AWS Internal",
        "principal_type": "AWSService",
        "service": "AWS Internal",
        "source_ip": "AWS Internal",
        "read_only": False,
        "event_type": "AwsServiceEvent",
        "encryption_context": None,
        "request_id": "",
        "after_hours": True,
    },
    19: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",  # an AWS service with the account's own key (blank ARN)
        "event_id": "e3c436e9-ebca-494e-9457-8123a1f5e979",
        "event_time": t("2018-02-14T00:15:17"),
        "event_name": "GenerateDataKey",
        "region": "us-west-2",
        "key": "",  # blank resources[].ARN and keyId ""
        "principal": "dynamodb.amazonaws.com",
        "principal_type": "AWSService",
        "service": "dynamodb.amazonaws.com",
        "caller_account_id": "",
        "source_ip": "dynamodb.amazonaws.com",
        "user_agent": "dynamodb.amazonaws.com",
        "read_only": True,
        "encryption_context": {"aws:dynamodb:tableName": "Services", "aws:dynamodb:subscriberId": OWNER},
        "request_id": "229386c1-111c-11e8-9e21-c11ed5a52190",
        "shared_event_id": "bf915fa6-6ceb-4659-8912-e36b69846aad",
        "after_hours": True,
    },
    20: {
        **ALICE_DEFAULTS,
        "quota_class": "symmetric",
        "event_id": "b7d16574-e887-4b5b-a064-bf92f8ec9ad3",
        "event_time": t("2018-02-14T16:42:39"),
        "event_name": "Decrypt",
        "region": "us-west-2",
        "key": "",  # blank resources[].ARN and no keyId
        "principal": "arn:aws:iam::111122223333:role/Admin",
        "principal_type": "AssumedRole",
        "session_name": "user01",
        "service": "dynamodb.amazonaws.com",
        "source_ip": "dynamodb.amazonaws.com",
        "user_agent": "dynamodb.amazonaws.com",
        "read_only": True,
        "encryption_context": {"aws:dynamodb:tableName": "Books", "aws:dynamodb:subscriberId": OWNER},
        "request_id": "11cab293-11a6-11e8-8386-13160d3e5db5",
        "after_hours": False,
    },
    21: {
        **ALICE_DEFAULTS,
        "quota_class": "",
        "event_id": "bcdef313-cb2b-478d-c5cb-a830e56bf632",
        "event_time": t("2026-10-18T19:10:44"),
        "event_name": "Decapsulate",
        "region": "us-east-1",
        "key": KEY,
        "user_agent": "aws-sdk-java/2.30.22 md/io#async md/http#AwsCommonRuntime ...",
        "read_only": True,
        "event_category": "Management",
        "encryption_context": None,
        "request_id": "23456237-41e6-4c39-a9c0-a264eb660a74",
        "after_hours": False,  # a Sunday, and weekends are business days by default
    },
    22: {
        **CROSS_ACCOUNT_DEFAULTS,
        "quota_class": "symmetric",
        "recipient_account_id": CALLER,
        "event_id": "c0ffee00-0000-4000-8000-00000000000a",
        "principal": "arn:aws:iam::444455556666:role/AppRole",
        "principal_type": "AssumedRole",
        "session_name": "app-session",
        "service": "",
        "caller_account_id": CALLER,
        "error_code": "",
        "error_message": "",
        "request_id": "5a1b2c3d-0000-4000-8000-000000000001",
        "shared_event_id": "5ca1ab1e-0000-4000-8000-0000000000ff",
    },
    23: {
        **CROSS_ACCOUNT_DEFAULTS,
        "quota_class": "",  # the key owner's copy: the caller's account is throttled
        "recipient_account_id": OWNER,
        "event_id": "c0ffee00-0000-4000-8000-00000000000b",
        "principal": CALLER,  # the key owner's copy only names the calling account
        "principal_type": "AWSAccount",
        "session_name": "",
        "service": "",
        "caller_account_id": CALLER,
        "error_code": "",
        "error_message": "",
        "request_id": "5a1b2c3d-0000-4000-8000-000000000001",
        "shared_event_id": "5ca1ab1e-0000-4000-8000-0000000000ff",
    },
    24: {
        **CROSS_ACCOUNT_DEFAULTS,
        "quota_class": "symmetric",
        "recipient_account_id": CALLER,
        "event_id": "deadbeef-0000-4000-8000-00000000000c",
        "principal": "arn:aws:iam::444455556666:role/AppRole",
        "principal_type": "AssumedRole",
        "session_name": "app-session",
        "service": "",
        "caller_account_id": CALLER,
        "error_code": "AccessDenied",
        "error_message": (
            "User: arn:aws:sts::444455556666:assumed-role/AppRole/app-session is not authorized to perform: "
            "kms:Decrypt on resource: arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab "
            "because no resource-based policy allows the kms:Decrypt action"
        ),
        "request_id": "5a1b2c3d-0000-4000-8000-000000000002",
        "shared_event_id": "",
    },
}


def test_the_table_covers_every_example_and_every_field():
    fields = {f.name for f in dataclasses.fields(parse_record(EXAMPLES[1]["record"]))}
    assert set(EXPECTED) == set(EXAMPLES) == set(range(1, 25))
    for example_id, expected in EXPECTED.items():
        assert set(expected) == fields, example_id


@pytest.mark.parametrize("example_id", sorted(EXPECTED))
def test_each_documented_example_normalizes_field_by_field(example_id):
    event = parse_record(EXAMPLES[example_id]["record"], UTC_HOURS)

    assert dataclasses.asdict(event) == EXPECTED[example_id]
    assert event.event_time.utcoffset().total_seconds() == 0
    assert event.failed is bool(EXPECTED[example_id]["error_code"])


@pytest.mark.parametrize("example_id", sorted(EXPECTED))
def test_the_lookup_events_json_text_of_each_example_normalizes_the_same(example_id):
    # LookupEvents hands over each record as a JSON string (CloudTrailEvent), S3 files as objects.
    text = json.dumps(EXAMPLES[example_id]["record"])

    assert parse_record(loads_record(text), UTC_HOURS) == parse_record(loads_record(text.encode()), UTC_HOURS)
    assert dataclasses.asdict(parse_record(loads_record(text), UTC_HOURS)) == EXPECTED[example_id]


def test_examples_2_and_3_share_an_event_id_so_they_deduplicate_into_one_event():
    success, failure = (parse_record(EXAMPLES[n]["record"]) for n in (2, 3))

    assert (success.recipient_account_id, success.event_id) == (failure.recipient_account_id, failure.event_id)
    assert (success.failed, failure.failed) == (False, True)


def test_both_copies_of_a_cross_account_call_are_kept_and_linked_by_the_shared_event_id():
    caller_copy, owner_copy = (parse_record(EXAMPLES[n]["record"]) for n in (22, 23))

    assert (caller_copy.recipient_account_id, owner_copy.recipient_account_id) == (CALLER, OWNER)
    assert caller_copy.event_id != owner_copy.event_id
    assert caller_copy.shared_event_id == owner_copy.shared_event_id != ""
    assert caller_copy.key == owner_copy.key == KEY


def test_the_failed_examples_are_exactly_3_5_and_24():
    failed = {n for n, e in EXAMPLES.items() if parse_record(e["record"]).failed}

    assert failed == {3, 5, 24}
