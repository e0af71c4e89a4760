"""With AWS configured and nothing ingested yet, the pages say what is happening, from the ledger."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse

from audits import selectors
from audits.models import Checkpoint, IngestRun, Source
from inventory.models import InventoryRun
from tests.audits.support import NOW, A, ingest, record
from tests.support import make_user

pytestmark = pytest.mark.django_db

# Every page a menu leads to (the base template carries the notice) but Django's own admin.
PAGES = [
    "audits:overview",
    "audits:keys",
    "audits:events",
    "audits:critical",
    "inventory:findings",
    "capacity:overview",
    "alerts:list",
    "costs:overview",
    "health",
    "exports",
]
# The pages whose tables would otherwise be empty, and what they say when nothing happened yet.
EMPTY_STATES = {
    "audits:overview": "No critical key events in this period.",
    "audits:keys": "No key was used in this period.",
    "audits:events": "No events match these filters.",
    "audits:critical": "No critical key events in this period.",
    "capacity:overview": "No calls counted against a request quota in this period.",
    "alerts:list": "No alert matches.",
}


@pytest.fixture
def boss(client):
    client.force_login(make_user("boss", "admin"))
    return client


def watch() -> None:
    Source.objects.create(account_id=A, regions=["us-east-1", "eu-west-1"])


def test_with_sources_and_no_run_every_page_says_the_first_ingestion_is_queued(boss, pages_now):
    watch()
    state = selectors.first_ingestion()
    assert state.state == "queued" and len(state.scopes) == 2
    assert state.next_start == NOW + timedelta(minutes=5)  # 12:00 exactly: the next tick
    for name in PAGES:
        html = boss.get(reverse(name)).content.decode()
        assert "The first ingestion is queued" in html and "by 12:05" in html, name
    for name, quiet in EMPTY_STATES.items():
        html = boss.get(reverse(name)).content.decode()
        assert quiet not in html and "Nothing read yet: the first ingestion has not finished" in html, name


def test_once_ingestion_has_caught_up_empty_tables_say_there_is_nothing_in_the_period(boss, pages_now):
    watch()
    for region in ("us-east-1", "eu-west-1"):
        Checkpoint.objects.create(kind="lookup", account_id=A, region=region, high_watermark=NOW)
    for name, quiet in EMPTY_STATES.items():
        html = boss.get(reverse(name)).content.decode()
        assert quiet in html and "the first ingestion has not finished" not in html, name


def test_a_running_first_ingestion_shows_its_progress_and_when_it_will_be_ready(boss, pages_now):
    watch()
    start = NOW - timedelta(days=1)
    # us-east-1 began 30 minutes ago and has read 6 of its 24 hours; eu-west-1 has not run yet.
    with time_machine.travel(NOW - timedelta(minutes=30), tick=False):
        run = IngestRun.objects.create(
            kind="lookup",
            account_id=A,
            region="us-east-1",
            status="succeeded",
            window_start=start,
            window_end=start + timedelta(hours=6),
        )
    Checkpoint.objects.create(
        kind="lookup", account_id=A, region="us-east-1", high_watermark=start + timedelta(hours=6)
    )
    IngestRun.objects.create(
        kind="lookup",
        account_id=A,
        region="us-east-1",
        status="running",
        window_start=start + timedelta(hours=6),
        events_new=120,
    )
    run.events_new = 1000
    run.save()
    state = selectors.first_ingestion()
    assert state.state == "running" and state.events == 1120
    east = next(p for p in state.scopes if p.scope.region == "us-east-1")
    assert 24 <= east.percent <= 26  # 6 h of the 23 h 55 min to read
    assert NOW + timedelta(minutes=85) <= east.ready_at <= NOW + timedelta(minutes=95)
    assert state.ready_at is None  # eu-west-1 has no pace yet
    html = boss.get(reverse("audits:overview")).content.decode()
    assert "The first ingestion is running" in html and "1,120 events stored so far" in html
    assert f"LookupEvents {A} us-east-1:" in html and "25% read" in html
    assert re.search(r"ready around 13:(29|30)", html)
    assert f"LookupEvents {A} eu-west-1:" in html and "waiting for its first run" in html


def test_a_failing_first_ingestion_says_so(boss, pages_now):
    watch()
    for region in ("us-east-1", "eu-west-1"):
        IngestRun.objects.create(
            kind="lookup",
            account_id=A,
            region=region,
            status="failed",
            error="ClientError: AccessDenied <b>x</b>",
            finished_at=NOW,
        )
    assert selectors.first_ingestion().state == "failed"
    html = boss.get(reverse("audits:keys")).content.decode()
    assert "The first ingestion failed" in html and "AccessDenied &lt;b&gt;x&lt;/b&gt;" in html


def test_the_notice_goes_once_a_scope_has_caught_up(boss, pages_now):
    watch()
    Checkpoint.objects.create(
        kind="lookup", account_id=A, region="us-east-1", high_watermark=NOW - timedelta(minutes=6)
    )
    assert selectors.first_ingestion() is None
    assert "first ingestion" not in boss.get(reverse("audits:overview")).content.decode()


def test_without_sources_the_pages_say_none_is_watched_but_keep_their_empty_states(boss, pages_now):
    html = boss.get(reverse("audits:overview")).content.decode()
    assert "No AWS account is watched yet" in html and "manage.py add_source" in html
    assert "No events in this period." in html
    ingest([record()])  # imported files: nothing to wait for
    assert selectors.first_ingestion() is None


def test_the_notice_costs_one_query_once_ingestion_has_caught_up(pages_now, django_assert_num_queries):
    watch()
    Checkpoint.objects.create(kind="lookup", account_id=A, region="us-east-1", high_watermark=NOW)
    with django_assert_num_queries(1):
        assert selectors.first_ingestion() is None


def test_findings_say_the_inventory_has_not_run_yet(boss, pages_now):
    html = boss.get(reverse("inventory:findings")).content.decode()
    assert "The key inventory has not run yet" in html
    InventoryRun.objects.create(account_id=A, region="us-east-1")
    assert "The first key inventory is running since" in boss.get(reverse("inventory:findings")).content.decode()
    InventoryRun.objects.create(account_id=A, region="us-east-1", status="succeeded")
    assert "No finding matches." in boss.get(reverse("inventory:findings")).content.decode()


def test_costs_say_cost_explorer_has_not_been_read_yet(boss, pages_now):
    from costs.models import CostRun

    html = boss.get(reverse("costs:overview")).content.decode()
    assert "Cost Explorer has not been read yet" in html and "fill in then.</p>" in html
    CostRun.objects.create(window_start=NOW.date(), window_end=NOW.date(), metric="UnblendedCost", status="succeeded")
    assert "Cost Explorer has not been read yet" not in boss.get(reverse("costs:overview")).content.decode()
