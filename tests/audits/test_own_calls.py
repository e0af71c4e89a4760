"""kmsdash's own AWS calls: sent with its user agent, flagged on ingestion, left out of every count,
finding and alert, and shown again with the pages' switch."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from audits import selectors
from audits.cloudtrail import OwnCalls, parse_record
from audits.filters import EventFilter
from audits.ingest import own_calls
from audits.models import DailyRollup, Event, KeyDay, PrincipalDay, QuotaMinute, Source
from kmsdash import aws as kms_aws
from tests.audits.support import K1, NOW, A, ingest, record
from tests.support import make_user

pytestmark = pytest.mark.django_db

READER = f"arn:aws:iam::{A}:role/kmsdash-reader"
BOTO = "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux#6.1 lang/python#3.11.2 cfg/retry-mode#standard"
OURS = f"{BOTO} {kms_aws.USER_AGENT}"


def ours(name="DescribeKey", **extra):
    """A call kmsdash's inventory makes with the sources' reader role."""
    return record(name, role="kmsdash-reader", session="kmsdash", user_agent=OURS, **extra)


def test_a_call_is_kmsdash_s_own_only_with_its_user_agent_and_from_its_principal_when_known():
    known = OwnCalls(kms_aws.USER_AGENT_MARK, frozenset([READER]))
    assert parse_record(ours(), own_calls=known).own
    # Anyone can send the user agent: from another principal it hides nothing.
    assert not parse_record(record("Decrypt", user_agent=OURS), own_calls=known).own
    assert not parse_record(record("DescribeKey", role="kmsdash-reader", user_agent=BOTO), own_calls=known).own
    # With no principal known, the user agent decides; without OwnCalls, nothing is flagged.
    assert parse_record(record("Decrypt", user_agent=OURS), own_calls=OwnCalls("kmsdash/")).own
    assert not parse_record(ours()).own


def test_kmsdash_s_principals_are_the_sources_reader_roles_and_the_configured_ones(settings):
    settings.KMSDASH_SELF_PRINCIPALS = [f"arn:aws:iam::{A}:role/kmsdash-host"]
    Source.objects.create(account_id=A, regions=["us-east-1"], role_arn=READER)
    Source.objects.create(account_id="444455556666", regions=["us-east-1"])  # the default credentials
    assert own_calls().principals == {READER, f"arn:aws:iam::{A}:role/kmsdash-host"}


def test_own_calls_are_stored_but_counted_apart_only_in_the_rollup():
    Source.objects.create(account_id=A, regions=["us-east-1"], role_arn=READER)
    records = [ours(), ours("GetKeyRotationStatus", error_code="AccessDeniedException"), record("Decrypt")]
    ingest(records)

    assert Event.objects.count() == 3 and Event.objects.filter(own=True).count() == 2
    key_day = KeyDay.objects.get(key=K1)
    assert (key_day.calls, key_day.failed) == (1, 0)
    assert list(PrincipalDay.objects.values_list("principal", "count")) == [(f"arn:aws:iam::{A}:role/app", 1)]
    assert sorted(DailyRollup.objects.values_list("operation", "own", "count")) == [
        ("Decrypt", False, 1),
        ("DescribeKey", True, 1),
        ("GetKeyRotationStatus", True, 1),
    ]
    # Re-reading the same records changes nothing.
    ingest(records)
    assert KeyDay.objects.get(key=K1).calls == 1 and DailyRollup.objects.filter(own=True).count() == 2


def test_own_calls_use_the_request_quota_like_everyone_s():
    ingest([ours("Decrypt", when=NOW), record("Decrypt", when=NOW), ours("DescribeKey", when=NOW)])
    assert sorted(QuotaMinute.objects.values_list("quota_class", "calls")) == [("DescribeKey", 1), ("symmetric", 2)]
    assert KeyDay.objects.get().calls == 1


@pytest.fixture
def mixed(pages_now):
    ingest(
        [
            record("Decrypt"),
            record("Decrypt", error_code="AccessDeniedException"),
            ours(),
            ours("ListGrants", error_code="AccessDeniedException"),
            ours("GetKeyPolicy", error_code="AccessDeniedException"),
        ]
    )


def test_the_overview_leaves_out_own_calls_unless_the_switch_is_on(mixed):
    without = selectors.overview(EventFilter()).totals
    with_own = selectors.overview(EventFilter(own=True)).totals
    assert (without["calls"], without["failed"], without["principals"]) == (2, 1, 1)
    assert (with_own["calls"], with_own["failed"], with_own["principals"]) == (5, 3, 2)


def test_the_pages_and_their_links_keep_the_switch(client, mixed):
    client.force_login(make_user("ana", "analyst"))
    keys = client.get(reverse("audits:keys"), {"period": "7d"}).content.decode()
    switched = client.get(reverse("audits:keys"), {"period": "7d", "own": "1"}).content.decode()
    assert 'name="own" value="1">' in keys and 'name="own" value="1" checked>' in switched
    events = client.get(reverse("audits:events"), {"period": "7d"}).content.decode()
    assert "ListGrants" not in events and "GetKeyPolicy" not in events
    events = client.get(reverse("audits:events"), {"period": "7d", "own": "1"}).content.decode()
    assert "ListGrants" in events and "GetKeyPolicy" in events
    assert EventFilter.from_querydict({"own": "1"}).querystring() == "own=1"
    assert EventFilter.from_querydict({"own": "maybe"}).errors == ("own must be 1 or 0.",)


def test_the_health_page_shows_kmsdash_s_calls_a_day_per_account_and_region(client, pages_now):
    ingest([ours(when=NOW - timedelta(days=d, hours=1)) for d in range(7) for _ in range(10)])
    ingest([ours(when=NOW - timedelta(days=20))])  # outside the week
    assert selectors.own_calls_per_day(NOW) == [
        {"account_id": A, "region": "us-east-1", "calls": 70, "failed": 0, "per_day": 10}
    ]
    client.force_login(make_user("root", "admin"))
    html = client.get(reverse("health")).content.decode()
    assert 'id="own-calls"' in html and "<td>70</td>" in html


@pytest.mark.emulator
def test_every_aws_client_sends_kmsdash_s_user_agent(aws):
    kms_aws.client("kms", "us-east-1").list_keys()
    (call,) = aws.requests("TrentService.ListKeys")
    assert call["user_agent"].endswith(f" {kms_aws.USER_AGENT}")
