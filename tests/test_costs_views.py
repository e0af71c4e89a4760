"""The cost pages: who may open them, what they show, and that AWS text stays text."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth.models import Group, User
from django.urls import reverse
from django.utils import timezone

from audits.models import DailyRollup, Source
from costs.models import CostRecord, CostRun, UsageClass
from costs.prices import classify_usage_type
from kmsdash.models import ExportAudit

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
A = "111122223333"
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_USAGE = f"{HOSTILE}-KMS-Requests"
OVERVIEW = reverse("costs:overview")
EXPORT = reverse("costs:export")


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=True):
        yield


def login(client, role: str | None) -> User:
    user = User.objects.create_user(f"user-{role}", password="x")
    if role:
        # A transactional test run before on the same worker flushes the groups the migration made.
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    client.force_login(user)
    return user


def cost(day, usage_type, amount, *, account=A, estimated=True):
    kind = classify_usage_type(usage_type)
    return CostRecord.objects.create(
        day=day,
        account_id=account,
        usage_type=usage_type,
        usage_class=kind.usage_class,
        region=kind.region,
        metric="UnblendedCost",
        amount=Decimal(amount),
        estimated=estimated,
        fetched_at=timezone.now(),
    )


def figure(body: str, element_id: str) -> dict:
    """The figure app.js would read: the data-figure-json attribute of the element with that id."""
    match = re.search(rf'id="{element_id}" data-figure-json="([^"]*)"', body)
    assert match, f"no {element_id} in the page"
    assert "<" not in match.group(1)
    return json.loads(html.unescape(match.group(1)))


@pytest.mark.parametrize(("role", "status"), [("finance", 200), ("admin", 200), ("analyst", 403)])
def test_the_overview_is_for_finance_and_admins(client, role, status):
    login(client, role)
    assert client.get(OVERVIEW).status_code == status


@pytest.mark.parametrize(("role", "status"), [("finance", 200), ("admin", 200), ("analyst", 403), (None, 403)])
def test_the_export_is_for_finance_and_admins(client, role, status):
    login(client, role)
    assert client.post(EXPORT, {"since": "2026-11-01", "until": "2026-11-20"}).status_code == status


def test_anonymous_users_are_sent_to_the_login_page(client):
    for url, method in ((OVERVIEW, client.get), (EXPORT, client.post)):
        response = method(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
        # htmx would swap a followed redirect into the fragment: it gets HX-Redirect instead.
        response = method(url, headers={"HX-Request": "true"})
        assert response.status_code == 200 and response["HX-Redirect"].startswith("/accounts/login/?next=")


def test_the_export_refuses_get_and_needs_a_csrf_token(client):
    login(client, "finance")
    assert client.get(EXPORT).status_code == 405
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(User.objects.get(username="user-finance"))
    assert strict.post(EXPORT, {"since": "2026-11-01"}).status_code == 403


def test_the_views_declare_their_roles():
    from costs import views

    assert views.overview.kmsdash_roles == ("finance",)
    assert views.export_csv.kmsdash_roles == ("finance",)


def test_hostile_usage_types_and_account_names_render_as_text_in_the_page_and_the_chart(client):
    login(client, "finance")
    Source.objects.create(account_id=A, name='"><script>alert(2)</script>')
    cost(date(2026, 11, 3), HOSTILE_USAGE, "1.50")
    cost(date(2026, 11, 3), "us-east-1-KMS-Requests", "0.25", estimated=False)
    when = datetime(2026, 11, 3, tzinfo=UTC)
    DailyRollup.objects.create(
        day=date(2026, 11, 3),
        account_id=A,
        region="us-east-1",
        key="alias/" + HOSTILE,
        operation="Decrypt",
        principal=f"arn:aws:iam::{A}:role/{HOSTILE}",
        service="",
        error_code="",
        after_hours=False,
        count=50_000,
        first_seen=when,
        last_seen=when,
    )
    page = client.get(OVERVIEW, {"by": "usage_type"}).content.decode()
    assert "<img src=x" not in page and "<script>alert(2)" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;-KMS-Requests" in page
    assert "role/&lt;img src=x onerror=alert(1)&gt;" in page
    names = [trace["name"] for trace in figure(page, "cost-daily-figure")["data"]]
    assert "&lt;img src=x onerror=alert(1)&gt;-KMS-Requests" in names
    by_account = client.get(OVERVIEW, {"by": "account"}).content.decode()
    assert [t["name"] for t in figure(by_account, "cost-daily-figure")["data"]] == [
        f'"&gt;&lt;script&gt;alert(2)&lt;/script&gt; ({A})'
    ]


def test_the_chart_switch_returns_only_the_chart_fragment_for_htmx(client):
    login(client, "finance")
    cost(date(2026, 11, 2), "us-east-1-KMS-Keys", "0.0333333333")
    cost(date(2026, 11, 2), "eu-west-1-KMS-Requests", "0.40", estimated=False)
    response = client.get(OVERVIEW, {"by": "region"}, headers={"HX-Request": "true", "HX-Target": "daily-chart"})
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<section class="panel" id="daily-chart">') and "<html" not in body
    data = figure(body, "cost-daily-figure")["data"]
    assert sorted(trace["name"] for trace in data) == ["eu-west-1", "us-east-1"]
    us = next(trace for trace in data if trace["name"] == "us-east-1")
    day_index = us["x"].index("2026-11-02")
    assert us["marker"]["pattern"]["shape"][day_index] == "/"  # an estimated day is hatched


def test_the_overview_shows_month_to_date_forecast_spend_and_reconciliation(client):
    login(client, "admin")
    cost(date(2026, 10, 5), "us-east-1-KMS-Requests", "2.00", estimated=False)
    cost(date(2026, 11, 5), "us-east-1-KMS-Requests", "3.00")
    CostRun.objects.create(
        window_start=date(2026, 10, 1),
        window_end=date(2026, 11, 21),
        metric="UnblendedCost",
        status=CostRun.Status.SUCCEEDED,
        requests=12,
    )
    response = client.get(OVERVIEW)
    page = response.content.decode()
    assert response.context["summary"].month_to_date == Decimal("3.00")
    assert response.context["summary"].last_month_same_days == Decimal("2.00")
    assert "This tool spent $0.12 on Cost Explorer this month (12 requests at $0.01)." in " ".join(page.split())
    assert response.context["recon"].actual == Decimal("5.00")
    assert "vendor/plotly-strict-4.1.1.min.js" in page


def test_an_invalid_period_falls_back_to_the_default_and_says_so(client):
    login(client, "finance")
    response = client.get(OVERVIEW, {"since": "2026-11-10", "until": "2026-11-01"})
    assert response.status_code == 200
    assert response.context["since"] == date(2026, 10, 1) and response.context["until"] == date(2026, 11, 20)
    assert "Invalid period" in response.content.decode()


def test_rendering_the_pages_never_calls_cost_explorer(client, aws):
    login(client, "finance")
    cost(date(2026, 11, 2), "us-east-1-KMS-Keys", "0.0333333333")
    assert client.get(OVERVIEW).status_code == 200
    htmx = {"HX-Request": "true", "HX-Target": "daily-chart"}
    assert client.get(OVERVIEW, {"by": "account"}, headers=htmx).status_code == 200
    assert aws.requests("GetCostAndUsage") == []


def test_the_csv_export_streams_the_daily_table_safely_and_is_audited(client):
    user = login(client, "finance")
    cost(date(2026, 11, 3), '=HYPERLINK("http://evil/")', "-12.34", estimated=False)
    cost(date(2026, 11, 3), "us-east-1-KMS-Requests", "0.0000030000")
    cost(date(2026, 9, 3), "us-east-1-KMS-Requests", "9.99")  # outside the period
    response = client.post(EXPORT, {"since": "2026-11-01", "until": "2026-11-20"})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="kmsdash-costs-20261101-20261120.csv"'
    body = b"".join(response.streaming_content)
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0][:6] == ["date", "account", "usage_type", "usage_class", "region", "cost"]
    assert len(rows) == 3
    hostile = next(r for r in rows[1:] if "HYPERLINK" in r[2])
    assert hostile[2].startswith("'=") and hostile[5] == "-12.3400000000"
    assert UsageClass.OTHER == hostile[3]
    audit = ExportAudit.objects.get()
    assert (audit.kind, audit.user, audit.status, audit.rows) == ("costs", user, "completed", 2)
    assert audit.filters == {"since": "2026-11-01", "until": "2026-11-20"}
    assert audit.sha256 == hashlib.sha256(body).hexdigest()


def test_htmx_history_restores_get_the_whole_page_and_responses_vary_on_htmx(client):
    login(client, "finance")
    response = client.get(
        OVERVIEW,
        {"by": "account"},
        headers={"HX-Request": "true", "HX-Target": "daily-chart", "HX-History-Restore-Request": "true"},
    )
    assert "<html" in response.content.decode()
    assert "HX-Request" in response["Vary"]


def test_estimated_cost_is_allocated_by_key_tag_with_hostile_values_kept_as_text(client):
    from inventory.models import Key

    login(client, "finance")
    for n, tags in enumerate([{"team": HOSTILE}, {"team": "payments", "env": "prod"}, {}]):
        Key.objects.create(
            arn=f"arn:aws:kms:us-east-1:{A}:key/0000000{n}-0000-0000-0000-000000000000",
            key_id=f"0000000{n}-0000-0000-0000-000000000000",
            account_id=A,
            region="us-east-1",
            key_manager="CUSTOMER",
            key_spec="SYMMETRIC_DEFAULT",
            key_state="Enabled",
            creation_date=datetime(2025, 1, 1, tzinfo=UTC),
            tags=tags,
            last_seen_at=timezone.now(),
        )
    htmx = {"HX-Request": "true", "HX-Target": "by-tag"}
    response = client.get(OVERVIEW, {"since": "2026-11-01", "until": "2026-11-30", "tag": "team"}, headers=htmx)
    body = response.content.decode()
    assert body.lstrip().startswith('<section class="panel" id="by-tag">') and "<html" not in body
    assert "<img src=x" not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    fig = figure(body, "cost-tag-figure")
    key_months = dict(zip(fig["data"][0]["y"], fig["data"][0]["x"], strict=True))
    assert set(key_months) == {"&lt;img src=x onerror=alert(1)&gt;", "payments", "(untagged)"}
    assert key_months["payments"] == pytest.approx(1.0)  # a whole November for one key
    assert '<option value="team" selected>' in body and '<option value="env">' in body
    # An unknown tag falls back to the most used one.
    fallback = client.get(OVERVIEW, {"tag": "nope"}, headers=htmx).content.decode()
    assert '<option value="team" selected>' in fallback
