from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from audits.models import Checkpoint, IngestRun, Quarantine, Source
from audits.selectors import ingestion_health
from kmsdash.roles import ADMIN
from tests.support import make_user

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
A, B = "111122223333", "444455556666"


def run(kind="lookup", account=A, region="us-east-1", *, minutes_ago: float, status="succeeded", error="", new=0):
    started = NOW - timedelta(minutes=minutes_ago)
    item = IngestRun.objects.create(
        kind=kind, account_id=account, region=region, status=status, error=error, events_new=new
    )
    finished = started + timedelta(seconds=20) if status != "running" else None
    IngestRun.objects.filter(pk=item.pk).update(started_at=started, finished_at=finished)
    return item


def checkpoint(kind="lookup", account=A, region="us-east-1", *, minutes_ago: float):
    return Checkpoint.objects.create(
        kind=kind, account_id=account, region=region, high_watermark=NOW - timedelta(minutes=minutes_ago)
    )


def by_scope(now=NOW):
    return {(h.kind, h.account_id, h.region): h for h in ingestion_health(now)}


def test_lag_is_measured_from_the_checkpoint_and_a_fresh_source_is_healthy():
    run(minutes_ago=6, new=42)
    run(minutes_ago=11)
    checkpoint(minutes_ago=10)
    health = by_scope()[("lookup", A, "us-east-1")]
    assert health.lag == timedelta(minutes=10)
    assert health.lag_text == "10 min"
    assert health.last_run.events_new == 42
    assert not health.warning


def test_a_source_more_than_half_an_hour_behind_is_flagged():
    run(minutes_ago=3)
    checkpoint(minutes_ago=31)
    health = by_scope()[("lookup", A, "us-east-1")]
    assert health.lagging and health.warning and not health.failing
    assert health.lag_text == "31 min"


def test_a_failed_last_run_is_flagged_with_its_error_even_when_data_is_fresh():
    run(minutes_ago=10)
    run(minutes_ago=5, status="failed", error="AccessDeniedException: not authorized")
    checkpoint(minutes_ago=12)
    health = by_scope()[("lookup", A, "us-east-1")]
    assert health.failing and health.warning
    assert health.last_failure.error.startswith("AccessDeniedException")


def test_an_old_failure_is_shown_but_a_later_success_clears_the_warning():
    run(minutes_ago=60, status="failed", error="ThrottlingException")
    run(minutes_ago=5)
    checkpoint(minutes_ago=9)
    health = by_scope()[("lookup", A, "us-east-1")]
    assert not health.warning
    assert health.last_failure.error == "ThrottlingException"


def test_without_a_checkpoint_lag_is_measured_from_the_last_success():
    run(kind="s3", minutes_ago=200)
    run(kind="s3", minutes_ago=100, status="failed", error="boom")
    run(kind="s3", minutes_ago=50, status="running")
    health = by_scope()[("s3", A, "us-east-1")]
    assert health.last_success_at == NOW - timedelta(minutes=200) + timedelta(seconds=20)
    assert health.lag_text == "3 h 19 min"
    assert health.last_run.status == "running"
    assert health.lagging


def test_a_configured_source_that_never_ran_is_flagged_and_manual_imports_never_lag():
    Source.objects.create(account_id=B, regions=["eu-west-1", "us-east-1"])
    Source.objects.create(account_id="999988887777", regions=["us-east-1"], enabled=False)
    Source.objects.create(account_id="222233334444", regions=["us-east-1"], lookup_enabled=False, s3_bucket="trail")
    run(kind="files", account="", region="", minutes_ago=60 * 24 * 9)
    scopes = by_scope()
    assert set(scopes) == {
        ("lookup", B, "eu-west-1"),
        ("lookup", B, "us-east-1"),
        ("s3", "222233334444", "us-east-1"),
        ("files", "", ""),
    }
    assert scopes[("lookup", B, "eu-west-1")].last_run is None and scopes[("lookup", B, "eu-west-1")].warning
    assert not scopes[("files", "", "")].warning


def test_the_queries_do_not_grow_with_the_number_of_sources(django_assert_max_num_queries):
    for i in range(30):
        account = f"{100000000000 + i}"
        for region in ("us-east-1", "eu-west-1"):
            run(account=account, region=region, minutes_ago=5)
            run(account=account, region=region, minutes_ago=10, status="failed", error="x")
            checkpoint(account=account, region=region, minutes_ago=8)
    with django_assert_max_num_queries(4):
        assert len(ingestion_health(NOW)) == 60


@pytest.fixture
def admin_client(client):
    client.force_login(make_user("root", ADMIN))
    return client


def test_the_page_shows_state_errors_escaped_quarantine_and_sources(admin_client):
    run(minutes_ago=5, status="failed", error="<script>alert(1)</script> denied")
    checkpoint(minutes_ago=45)
    run(account=B, minutes_ago=4)
    checkpoint(account=B, minutes_ago=7)
    Source.objects.create(
        account_id=A, name="<b>prod</b>", regions=["us-east-1"], role_arn="arn:aws:iam::111122223333:role/kmsdash"
    )
    for days_ago in (1, 2, 30):
        item = Quarantine.objects.create(location=f"s3://bucket/{days_ago}.json.gz", reason="truncated gzip")
        Quarantine.objects.filter(pk=item.pk).update(created_at=NOW - timedelta(days=days_ago))
    with time_machine.travel(NOW, tick=False):
        response = admin_client.get("/health/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "1 source needs attention" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; denied" in html and "<script>alert" not in html
    assert "45 min" in html and "7 min" in html
    assert "failing" in html
    assert "Quarantined in the last 7 days: <strong>2</strong>" in html
    assert 'href="/admin/audits/quarantine/"' in html
    assert "&lt;b&gt;prod&lt;/b&gt;" in html and "arn:aws:iam::111122223333:role/kmsdash" in html


def test_htmx_polling_gets_only_the_status_fragment(admin_client):
    run(minutes_ago=5)
    checkpoint(minutes_ago=6)
    with time_machine.travel(NOW, tick=False):
        response = admin_client.get("/health/", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="health-status"')
    assert "<html" not in html and "Configured sources" not in html
    assert "Every source is up to date." in html
    assert 'hx-trigger="every 60s"' in html
