"""What one logged-in user's query may cost: the explorer's default window, its summary pre-check,
the per-request statement timeout and the export's row cap."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audits import selectors
from audits.filters import EventFilter, explorer_window
from audits.models import Event
from kmsdash.models import ExportAudit
from tests.audits.support import K1, K2, NOW, A, index_copies, ingest, record, volume
from tests.support import make_user

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def listed(response) -> set[str]:
    return {event.event_id for event in response.context["page"].events}


def event_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if '"audits_event"' in q["sql"]]


# --- the default window --------------------------------------------------------------------------


def test_the_explorer_without_a_period_lists_only_the_default_window(pages_analyst, pages_now):
    ingest([record(event_id="recent"), record(event_id="old", when=NOW - timedelta(days=40))])
    response = pages_analyst.get(reverse("audits:events"))
    assert listed(response) == {"recent"}
    assert response.context["period"] == "30d"
    assert 'option value="30d" selected' in response.content.decode()
    assert listed(pages_analyst.get(reverse("audits:events"), {"period": "90d"})) == {"recent", "old"}
    assert listed(pages_analyst.get(reverse("audits:events"), {"since": "2026-01-01"})) == {"recent", "old"}


def test_a_window_with_only_an_end_starts_a_default_period_before_it(pages_now):
    f, period = explorer_window({"until": "2026-10-31"})
    assert period == "custom"
    assert (str(f.since), str(f.until)) == ("2026-10-02", "2026-10-31")
    f, _ = explorer_window({"period": "custom"})
    assert str(f.since) == "2026-10-22" and f.until is None


def test_the_next_page_keeps_the_named_period(pages_analyst, pages_now):
    ingest(volume(120))
    response = pages_analyst.get(reverse("audits:events"), {"period": "7d"})
    assert "period=7d" in response.context["next_url"] and "since=" not in response.context["next_url"]


# --- summaries before events ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"operation": "ScheduleKeyDeletion"},
        {"service": "nothing.amazonaws.com"},
        {"error": "NoSuchError"},
        {"account": "999999999999"},
        {"region": "ap-south-2"},
        {"key": K2, "error": "any"},
        {"principal": "arn:aws:iam::111122223333:role/nobody"},
    ],
)
def test_a_filter_that_matches_nothing_in_the_window_never_reads_the_event_table(pages_analyst, pages_now, query):
    ingest([record(event_id=f"e{i}") for i in range(5)] + [record(event_id="k2", key=K2)])
    with CaptureQueriesContext(connection) as queries:
        response = pages_analyst.get(reverse("audits:events"), query)
    assert response.status_code == 200 and listed(response) == set()
    assert event_queries(queries.captured_queries) == []


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"operation": "Decrypt"},
        {"error": "any"},
        {"error": "AccessDenied", "key": K1},
        {"error": "none", "after_hours": "1"},
        {"account": A, "region": "us-east-1"},
        {"service": "s3.amazonaws.com"},
        {"key": K1.rsplit("/", 1)[1]},
        {"operation": "Encrypt", "q": "boto"},
        {"since": "2026-11-15T10:30:00Z", "until": "2026-11-18T02:00:00Z", "operation": "Decrypt"},
    ],
)
def test_the_summary_pre_check_selects_exactly_the_events_of_the_filter(pages_now, query):
    ingest(volume(400) + [record(event_id="denied", error_code="AccessDenied")])
    f, _ = explorer_window(query)
    expected = set(f.events().values_list("id", flat=True))
    assert set(selectors.explorer_events(f).values_list("id", flat=True)) == expected
    if query and "q" not in query:
        assert expected, "the case must select something"


def test_the_pre_check_narrows_the_scan_to_the_days_the_summaries_saw(pages_now):
    ingest(volume(300) + [record("ScheduleKeyDeletion", event_id="rare", when=NOW - timedelta(days=3))])
    f, _ = explorer_window({"operation": "ScheduleKeyDeletion"})
    sql = str(selectors.explorer_events(f).query)
    assert sql.count('"audits_event"."event_time" >=') == 2 and '"audits_event"."event_time" <=' in sql
    assert list(selectors.explorer_events(f).values_list("event_id", flat=True)) == ["rare"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner")
@pytest.mark.parametrize("error", ["any", "AccessDenied"])
def test_failed_events_are_read_through_the_partial_index(error):
    ingest(volume(200) + [record(event_id="denied", error_code="AccessDenied")])
    f = EventFilter.from_querydict({"error": error, "since": "2026-01-01"})
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = selectors.explorer_events(f).order_by("-event_time", "-id")[:51].explain()
    assert any(copy in plan for copy in index_copies("event_failed_time_id"))


# --- statement timeout ----------------------------------------------------------------------------


@pytest.fixture
def slow_site(settings, client):
    settings.ROOT_URLCONF = "tests.audits.slow_urls"
    settings.KMSDASH_STATEMENT_TIMEOUT_MS = 300
    # Transactional tests flush the roles the migrations made.
    user = User.objects.create_user("slow", password="x")
    user.groups.add(Group.objects.get_or_create(name="analyst")[0])
    client.force_login(user)
    return client


@pytest.mark.django_db(transaction=True)  # as in production: autocommit, no test transaction to abort
def test_a_runaway_query_becomes_a_clear_message_page_not_a_500(slow_site):
    started = time.monotonic()
    response = slow_site.get("/slow/")
    assert time.monotonic() - started < 10
    assert response.status_code == 503
    assert "This query took too long" in response.content.decode()
    assert "0.3 seconds" in response.content.decode()
    # The connection serves the next request normally.
    assert slow_site.get(reverse("audits:events")).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_an_htmx_request_gets_the_message_in_the_page(slow_site):
    response = slow_site.get("/slow/", **HTMX)
    assert response.status_code == 200
    assert response["HX-Retarget"] == "main" and response["HX-Reswap"] == "innerHTML"
    assert "This query took too long" in response.content.decode()
    assert "<html" not in response.content.decode()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's statement_timeout")
@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_during_a_request_only(slow_site):
    assert slow_site.get("/timeout-setting/").content == b"300ms"
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"


# --- export cap -----------------------------------------------------------------------------------


def export(client, **params):
    response = client.post(reverse("audits:events_export"), {"since": "2026-11-01", **params})
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode()


@pytest.mark.parametrize(("events", "rows", "truncated"), [(5, 3, True), (3, 3, False), (2, 2, False)])
def test_a_web_export_stops_at_the_cap_and_its_audit_row_says_so(client, pages_now, settings, events, rows, truncated):
    settings.KMSDASH_EXPORT_MAX_ROWS = 3
    ingest([record(event_id=f"e{i}", when=NOW - timedelta(minutes=i)) for i in range(events)])
    client.force_login(make_user("adm", "admin"))
    body = export(client)
    assert body.count("\r\n") == rows + 1
    audit = ExportAudit.objects.get()
    assert (audit.rows, audit.row_cap, audit.truncated) == (rows, 3, truncated)
    html = client.get(reverse("exports")).content.decode()
    assert ("cut at the cap of 3" if truncated else "of at most 3") in html


def test_the_cap_reads_no_page_beyond_the_one_that_fills_it(client, pages_now, settings, monkeypatch):
    from audits import exports

    monkeypatch.setattr(exports, "PAGE_ROWS", 10)
    settings.KMSDASH_EXPORT_MAX_ROWS = 25
    ingest([record(event_id=f"e{i}", when=NOW - timedelta(minutes=i)) for i in range(100)])
    client.force_login(make_user("adm", "admin"))
    with CaptureQueriesContext(connection) as queries:
        body = export(client)
    assert body.count("\r\n") == 26
    pages = [q for q in queries.captured_queries if "ORDER BY" in q["sql"] and '"audits_event"' in q["sql"]]
    assert len(pages) == 3
    assert ExportAudit.objects.get().truncated


def test_the_explorer_shows_the_export_cap(client, pages_now, settings):
    settings.KMSDASH_EXPORT_MAX_ROWS = 250000
    client.force_login(make_user("adm", "admin"))
    assert "at most 250,000 rows" in client.get(reverse("audits:events")).content.decode()


def test_an_export_without_a_window_covers_the_explorers_default_period(client, pages_now):
    ingest([record(event_id="recent"), record(event_id="old", when=NOW - timedelta(days=40))])
    client.force_login(make_user("adm", "admin"))
    response = client.post(reverse("audits:events_export"))
    body = b"".join(response.streaming_content).decode()
    assert "recent" in body and "old" not in body
    assert ExportAudit.objects.get().filters["since"] == "2026-10-22"
    assert Event.objects.count() == 2


def all_pages(read) -> list[int]:
    seen, cursor = [], None
    while True:
        page = read(cursor)
        seen += [event.pk for event in page.events]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


@pytest.mark.parametrize(
    "query",
    [
        {"operation": "Decrypt"},
        {"operation": "ScheduleKeyDeletion"},
        {"error": "any"},
        {"key": K1},
        {"operation": "Decrypt", "q": "boto"},  # the summaries count events the search excludes
        {"operation": "Decrypt", "since": "2026-11-15T13:00:00Z", "until": "2026-11-19T01:00:00Z"},
    ],
)
@pytest.mark.parametrize("per_page", [1, 7, 50])
def test_reading_only_the_newest_days_pages_through_exactly_the_same_events(pages_now, query, per_page):
    ingest(volume(400) + [record("ScheduleKeyDeletion", when=NOW - timedelta(days=d)) for d in (1, 4, 9)])
    # Events the summaries still count but that are gone (as after a retention purge): overcounted days.
    newest = Event.objects.filter(event_name="Decrypt").order_by("-event_time").values_list("pk", flat=True)
    Event.objects.filter(pk__in=list(newest[:30])[::3]).delete()
    f, _ = explorer_window(query)
    expected = all_pages(lambda cursor: selectors.events_page(f.events(), cursor, per_page))
    assert expected
    assert all_pages(lambda cursor: selectors.explorer_page(f, cursor, per_page)) == expected


def test_a_page_of_a_common_filter_reads_only_its_newest_day(pages_now):
    ingest(volume(400))
    f, _ = explorer_window({"operation": "Decrypt"})
    with CaptureQueriesContext(connection) as queries:
        page = selectors.explorer_page(f, None, 5)
    (sql,) = event_queries(queries.captured_queries)
    newest = page.events[0].event_time.date().isoformat()
    # The scan starts at the newest day's midnight (the span's own bounds name that day too).
    assert f'"audits_event"."event_time" >= \'{newest} 00:00:00' in sql and len(page.events) == 5
