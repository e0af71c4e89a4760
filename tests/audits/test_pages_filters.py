from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Max, Q, Sum
from django.http import QueryDict
from hypothesis import given, settings
from hypothesis import strategies as st

from audits import selectors
from audits.filters import EventFilter
from audits.models import Event, KeyDay, OperationDay, PrincipalDay
from audits.selectors import grouped, summary
from tests.audits.support import K1, K2, NOW, A, B, delete_ingested, ingest, record, volume

pytestmark = pytest.mark.django_db


def parse(query: str) -> EventFilter:
    return EventFilter.from_querydict(QueryDict(query))


def test_every_parameter_of_the_url_interface_is_read_and_written_back_canonically():
    f = parse(
        f"key={K1}&principal=arn:aws:iam::{A}:role/app&service=s3.amazonaws.com&operation=Decrypt"
        f"&error=ANY&after_hours=1&account={A}&region=us-east-1&since=2026-11-01&until=2026-11-02T10:00:00%2B02:00"
        "&q=boto&unknown=1"
    )
    assert f.errors == ()
    assert f.as_params() == {
        "key": K1,
        "principal": f"arn:aws:iam::{A}:role/app",
        "service": "s3.amazonaws.com",
        "operation": "Decrypt",
        "error": "any",
        "after_hours": "1",
        "account": A,
        "region": "us-east-1",
        "since": "2026-11-01",
        "until": "2026-11-02T08:00:00Z",
        "q": "boto",
    }
    assert EventFilter.from_querydict(f.as_params()) == f


def test_a_date_until_covers_the_whole_day_and_a_date_time_until_is_inclusive():
    by_date = parse("since=2026-11-01&until=2026-11-02")
    assert by_date.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert by_date.end == datetime(2026, 11, 3, tzinfo=UTC)
    instant = parse("until=2026-11-02T10:00:00Z")
    assert instant.end == datetime(2026, 11, 2, 10, 0, 0, 1, tzinfo=UTC)
    assert instant.last_day.isoformat() == "2026-11-02"
    assert not instant.day_granular and by_date.day_granular


@pytest.mark.parametrize(
    "query",
    [
        "account=12345",
        "region=US East",
        "since=yesterday",
        "until=2026-13-01",
        "after_hours=maybe",
        "since=2026-11-05&until=2026-11-01",
        "q=" + "x" * 300,
    ],
)
def test_an_invalid_value_is_reported_and_matches_nothing(query):
    ingest([record()])
    f = parse(query)
    assert f.errors
    assert f.events().count() == 0
    assert f.rollups().count() == 0


def test_each_filter_selects_exactly_the_matching_events():
    old = NOW - timedelta(days=3)
    ingest(
        [
            record("Decrypt", key=K1, user_agent="Boto3/1.34", source_ip="198.51.100.7"),
            record("Encrypt", key=K2, region="eu-west-1", error_code="AccessDenied", error_message="no"),
            record("Decrypt", key=K1, when=old, role="batch"),
            record(
                "GenerateDataKey",
                key=f"arn:aws:kms:us-east-1:{B}:key/33333333-3333-4333-8333-333333333333",
                account=B,
                when=NOW.replace(hour=2),
            ),
        ]
    )
    names = lambda query: sorted(parse(query).events().values_list("event_name", flat=True))  # noqa: E731
    assert names(f"key={K1}") == ["Decrypt", "Decrypt"]
    assert names("key=11111111-1111-4111-8111-111111111111") == ["Decrypt", "Decrypt"]
    assert names("error=any") == ["Encrypt"]
    assert names("error=AccessDenied") == ["Encrypt"]
    assert names("error=none") == ["Decrypt", "Decrypt", "GenerateDataKey"]
    assert names(f"account={B}") == ["GenerateDataKey"]
    assert names("region=eu-west-1") == ["Encrypt"]
    assert names(f"principal=arn:aws:iam::{A}:role/batch") == ["Decrypt"]
    assert names("operation=Encrypt") == ["Encrypt"]
    assert names("after_hours=1") == ["GenerateDataKey"]  # 02:00 UTC is outside 06:00-23:00
    assert names(f"since={(NOW - timedelta(days=1)).date()}") == ["Decrypt", "Encrypt", "GenerateDataKey"]
    assert names(f"until={old.date()}") == ["Decrypt"]
    assert names("q=boto3") == ["Decrypt"]
    assert names("q=198.51.100.7") == ["Decrypt"]


QUERIES = st.fixed_dictionaries(
    {},
    optional={
        "key": st.sampled_from([K1, K2, "22222222-2222-4222-8222-222222222222"]),
        "operation": st.sampled_from(["Decrypt", "GenerateDataKey", "CreateGrant"]),
        "error": st.sampled_from(["any", "none", "AccessDenied"]),
        "after_hours": st.sampled_from(["1", "0"]),
        "account": st.sampled_from([A, B]),
        "region": st.sampled_from(["us-east-1", "eu-west-1"]),
        "since": st.integers(0, 10).map(lambda d: (NOW - timedelta(days=d)).date().isoformat()),
        "until": st.integers(0, 10).map(lambda d: (NOW - timedelta(days=d)).date().isoformat()),
    },
)


@pytest.fixture(scope="module")
def loaded(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        records = volume(600, seed=3)
        # Pin two of the generated keys to K1/K2 so that the strategies above hit real rows.
        for rec in records[:200]:
            rec["resources"][0]["ARN"] = rec["requestParameters"]["keyId"] = K1
            rec["recipientAccountId"], rec["awsRegion"] = A, "us-east-1"
        for rec in records[200:300]:
            rec["resources"][0]["ARN"] = rec["requestParameters"]["keyId"] = K2
            rec["recipientAccountId"], rec["awsRegion"] = A, "eu-west-1"
        run = ingest(records)
        assert run.events_new == 600 and Event.objects.filter(key=K1).count() == 200
        yield
        delete_ingested()


@settings(max_examples=60, deadline=None)
@given(query=QUERIES)
def test_rollups_and_events_agree_under_every_day_granular_filter(loaded, query):
    f = EventFilter.from_querydict(query)
    expected = 0 if f.errors else f.events().count()
    assert (f.rollups().aggregate(n=Sum("count"))["n"] or 0) == expected


@settings(max_examples=25, deadline=None)
@given(query=QUERIES)
def test_one_scan_groupings_equal_the_orm_group_bys(loaded, query):
    f = EventFilter.from_querydict(query)
    sets = [("day", "operation", "error_code", "after_hours"), ("key", "account_id", "region"), ("principal",)]
    results = grouped(f.rollups(), sets, ["calls", "failed", "after_hours_calls", "last_used"])
    for group, rows in zip(sets, results, strict=True):
        expected = {
            tuple(row[c] for c in group): (row["calls"], row["failed"], row["late"], row["last"])
            for row in f.rollups()
            .values(*group)
            .annotate(
                calls=Sum("count"),
                failed=Sum("count", filter=~Q(error_code=""), default=0),
                late=Sum("count", filter=Q(after_hours=True), default=0),
                last=Max("last_seen"),
            )
        }
        got = {
            tuple(row[c] for c in group): (row["calls"], row["failed"], row["after_hours_calls"], row["last_used"])
            for row in rows
        }
        assert got == expected


SUMMARY_GROUPS = {
    KeyDay: [("key", "account_id", "region"), ("day", "region")],
    OperationDay: [("day", "operation", "error_code", "after_hours"), ("account_id",)],
}


@settings(max_examples=40, deadline=None)
@given(query=QUERIES)
def test_the_rollup_summaries_answer_every_filter_they_accept_as_the_rollups_do(loaded, query):
    f = EventFilter.from_querydict(query)
    measures = ["calls", "failed", "after_hours_calls", "last_used"]
    for model, sets in SUMMARY_GROUPS.items():
        qs = summary(f, model)
        if qs is None:
            assert any(getattr(f, name) for name in ("principal", "service", "key", "operation", "error")) or (
                f.after_hours is not None
            )
            continue
        for group, fast, slow in zip(
            sets, grouped(qs, sets, measures), grouped(f.rollups(), sets, measures), strict=True
        ):

            def order(row, group=group):
                return tuple(row[c] for c in group)

            assert sorted(fast, key=order) == sorted(slow, key=order)
    principals = summary(f, PrincipalDay)
    if principals is not None:
        everyone = set(f.rollups().values_list("principal", flat=True))
        assert set(principals.values_list("principal", flat=True)) == everyone


def test_the_overview_and_keys_from_summaries_equal_those_from_rollups(loaded):
    f = EventFilter.from_querydict(QueryDict(f"account={A}"))
    assert summary(f, KeyDay) is not None and summary(f, OperationDay) is not None
    fast = selectors.overview(f, top=50)
    assert fast.totals["calls"] == Event.objects.filter(recipient_account_id=A).count() > 0
    assert (
        fast.totals["principals"]
        == Event.objects.filter(recipient_account_id=A).exclude(principal="").values("principal").distinct().count()
    )
    table = selectors.keys_table(f)
    selectors.add_reach(f, table)
    keys = {row["key"]: row for row in table}
    events = Event.objects.filter(recipient_account_id=A).exclude(key="")
    assert set(keys) == set(events.values_list("key", flat=True))
    for key, row in keys.items():
        mine = events.filter(key=key)
        assert row["calls"] == mine.count()
        assert row["encrypt"] == mine.filter(event_name="Encrypt").count()
        assert row["decrypt"] == mine.filter(event_name="Decrypt").count()
        assert row["generate"] == mine.filter(event_name__startswith="GenerateDataKey").count()
        assert row["failed"] == mine.exclude(error_code="").count()
        assert row["after_hours_calls"] == mine.filter(after_hours=True).count()
        assert row["last_used"] == mine.order_by("-event_time").values_list("event_time", flat=True).first()
        assert row["principals"] == mine.exclude(principal="").values("principal").distinct().count()
        assert row["services"] == mine.exclude(service="").values("service").distinct().count()
