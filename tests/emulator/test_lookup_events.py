"""The emulator's LookupEvents add-on keeps AWS's documented semantics (over real HTTP)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from audits.synthetic import identity_role, identity_user, kms_record
from kmsdash.aws import client

pytestmark = pytest.mark.emulator

ACCOUNT = "123456789012"  # the emulator's default, unassumed account
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555"
# Event history keeps 90 days: stay well inside it whenever the tests run.
BASE = (datetime.now(UTC) - timedelta(days=5)).replace(microsecond=0)


def records(n, *, start=BASE, step=timedelta(seconds=30), account=ACCOUNT, region="us-east-1", **extra):
    return [
        kms_record(
            event_name="Decrypt",
            event_time=start + i * step,
            key_arn=KEY,
            identity=identity_role(account, "app", "s1"),
            region=region,
            recipient_account_id=account,
            **extra,
        )
        for i in range(n)
    ]


def paced(cloudtrail):
    """A client that stays under the 2 requests/s limit, so these tests see only the behaviour under test."""
    last = [0.0]

    def wait(**kwargs):
        delay = last[0] + 0.6 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        last[0] = time.monotonic()

    cloudtrail.meta.events.register("before-send.cloudtrail.LookupEvents", wait)
    return cloudtrail


def test_lookup_events_pages_newest_first_with_exact_fields(aws):
    fed = records(120)
    aws.control("cloudtrail/events", {"records": fed})
    cloudtrail = paced(client("cloudtrail", "us-east-1", max_attempts=1))

    pages = list(
        cloudtrail.get_paginator("lookup_events").paginate(
            LookupAttributes=[{"AttributeKey": "EventSource", "AttributeValue": "kms.amazonaws.com"}]
        )
    )

    assert [len(page["Events"]) for page in pages] == [50, 50, 20]
    events = [event for page in pages for event in page["Events"]]
    times = [event["EventTime"] for event in events]
    assert times == sorted(times, reverse=True)
    assert {event["EventId"] for event in events} == {record["eventID"] for record in fed}
    first = events[0]
    assert first["ReadOnly"] == "true"
    assert first["EventSource"] == "kms.amazonaws.com"
    assert first["Username"] == "s1"
    assert first["Resources"] == [{"ResourceType": "AWS::KMS::Key", "ResourceName": KEY}]
    assert json.loads(first["CloudTrailEvent"]) == fed[-1]
    assert first["EventTime"] == datetime.fromisoformat(fed[-1]["eventTime"].replace("Z", "+00:00"))


def test_start_and_end_time_are_inclusive(aws):
    fed = records(10, step=timedelta(minutes=1))
    aws.control("cloudtrail/events", {"records": fed})
    cloudtrail = client("cloudtrail", "us-east-1", max_attempts=1)

    response = cloudtrail.lookup_events(StartTime=BASE + timedelta(minutes=2), EndTime=BASE + timedelta(minutes=5))

    assert [e["EventId"] for e in response["Events"]] == [r["eventID"] for r in reversed(fed[2:6])]


def test_events_are_served_to_their_own_account_and_region_only(aws):
    aws.control("cloudtrail/events", {"records": records(3, region="eu-west-1") + records(2, account="111122223333")})

    assert client("cloudtrail", "us-east-1", max_attempts=1).lookup_events()["Events"] == []
    assert len(client("cloudtrail", "eu-west-1", max_attempts=1).lookup_events()["Events"]) == 3


def test_lookup_attribute_filters_and_only_one_is_accepted(aws):
    user_event = kms_record(
        event_name="DisableKey",
        event_time=BASE,
        key_arn=KEY,
        identity=identity_user(ACCOUNT, "alice"),
        region="us-east-1",
        recipient_account_id=ACCOUNT,
    )
    aws.control("cloudtrail/events", {"records": records(3) + [user_event]})
    cloudtrail = paced(client("cloudtrail", "us-east-1", max_attempts=1))

    def ids(key, value):
        response = cloudtrail.lookup_events(LookupAttributes=[{"AttributeKey": key, "AttributeValue": value}])
        return [e["EventId"] for e in response["Events"]]

    assert ids("EventName", "DisableKey") == [user_event["eventID"]]
    assert ids("ReadOnly", "false") == [user_event["eventID"]]
    assert ids("Username", "alice") == [user_event["eventID"]]
    assert len(ids("ResourceName", KEY)) == 4
    assert ids("EventSource", "s3.amazonaws.com") == []
    with pytest.raises(ClientError) as excinfo:
        cloudtrail.lookup_events(
            LookupAttributes=[
                {"AttributeKey": "EventName", "AttributeValue": "Decrypt"},
                {"AttributeKey": "ReadOnly", "AttributeValue": "true"},
            ]
        )
    assert excinfo.value.response["Error"]["Code"] == "InvalidLookupAttributesException"


def test_data_events_are_not_served(aws):
    data_event = records(1)[0] | {"eventCategory": "Data", "managementEvent": False}
    assert aws.control("cloudtrail/events", {"records": [data_event]}) == {"stored": 0, "skipped": 1, "invalid": 0}


def test_a_next_token_only_works_with_the_parameters_that_made_it(aws):
    aws.control("cloudtrail/events", {"records": records(60)})
    cloudtrail = paced(client("cloudtrail", "us-east-1", max_attempts=1))
    params = {"StartTime": BASE, "EndTime": BASE + timedelta(days=1)}
    token = cloudtrail.lookup_events(**params)["NextToken"]

    with pytest.raises(ClientError) as excinfo:
        cloudtrail.lookup_events(StartTime=BASE + timedelta(seconds=1), EndTime=params["EndTime"], NextToken=token)
    assert excinfo.value.response["Error"]["Code"] == "InvalidNextTokenException"
    with pytest.raises(ClientError):
        cloudtrail.lookup_events(**params, NextToken="not-a-token")
    assert len(cloudtrail.lookup_events(**params, NextToken=token)["Events"]) == 10


def test_bad_max_results_and_time_range_are_rejected(aws):
    cloudtrail = paced(client("cloudtrail", "us-east-1", max_attempts=1))
    with pytest.raises(ClientError) as excinfo:
        cloudtrail.lookup_events(MaxResults=51)
    assert excinfo.value.response["Error"]["Code"] == "InvalidMaxResultsException"
    with pytest.raises(ClientError) as excinfo:
        cloudtrail.lookup_events(StartTime=BASE, EndTime=BASE - timedelta(seconds=1))
    assert excinfo.value.response["Error"]["Code"] == "InvalidTimeRangeException"


def test_more_than_two_requests_a_second_per_account_and_region_are_throttled(aws):
    cloudtrail = client("cloudtrail", "us-east-1", max_attempts=1)
    other_region = client("cloudtrail", "eu-west-1", max_attempts=1)
    cloudtrail.lookup_events()
    cloudtrail.lookup_events()

    with pytest.raises(ClientError) as excinfo:
        cloudtrail.lookup_events()
    other_region.lookup_events()  # a separate limit

    assert excinfo.value.response["Error"]["Code"] == "ThrottlingException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    time.sleep(1.05)
    cloudtrail.lookup_events()


def test_invalidated_tokens_fail_like_expired_ones(aws):
    aws.control("cloudtrail/events", {"records": records(60)})
    aws.control("cloudtrail/invalidate-tokens", {"count": 1})
    cloudtrail = paced(client("cloudtrail", "us-east-1", max_attempts=1))
    token = cloudtrail.lookup_events()["NextToken"]

    with pytest.raises(ClientError) as excinfo:
        cloudtrail.lookup_events(NextToken=token)
    assert excinfo.value.response["Error"]["Code"] == "InvalidNextTokenException"
    assert len(cloudtrail.lookup_events(NextToken=token)["Events"]) == 10
