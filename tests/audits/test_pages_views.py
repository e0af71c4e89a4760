from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime, timedelta
from html import unescape

import pytest
import time_machine
from django.urls import reverse

from audits import synthetic
from audits.cloudtrail import CRITICAL_EVENT_NAMES, BusinessHours
from audits.models import Event, IngestRun, Source
from tests.audits.support import K1, K2, K3, NOW, A, B, ingest, record, volume
from tests.support import make_user

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def figure(html: str, name: str) -> str:
    match = re.search(rf'<span class="figure">([\d,]+)</span><span class="caption">{name}</span>', html)
    assert match, f"no figure {name!r}"
    return match.group(1)


def chart(html: str, chart_id: str) -> dict:
    match = re.search(rf'id="{chart_id}" data-figure-json="([^"]*)"', html)
    assert match, f"no chart {chart_id}"
    return json.loads(unescape(match.group(1)))


# --- access ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["audits:overview", "audits:keys", "audits:events", "audits:critical"])
def test_pages_need_the_analyst_role(client, name):
    url = reverse(name)
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(make_user("fin", "finance"))
    assert client.get(url).status_code == 403
    client.force_login(make_user("ana2", "analyst"))
    assert client.get(url).status_code == 200


# --- overview ----------------------------------------------------------------------------------


def test_overview_figures_equal_independent_counts_of_the_records(pages_analyst, pages_now):
    records = volume(500) + [record("ScheduleKeyDeletion", when=NOW - timedelta(hours=2), error_code="AccessDenied")]
    ingest(records)
    since = (NOW - timedelta(days=6)).date()
    hours = BusinessHours.from_settings()
    in_period = [r for r in records if r["eventTime"][:10] >= since.isoformat()]
    html = pages_analyst.get(reverse("audits:overview"), {"period": "7d"}).content.decode()

    def n(value: int) -> str:
        return f"{value:,}"

    assert figure(html, "KMS calls") == n(len(in_period))
    assert figure(html, "Failed calls") == n(sum(1 for r in in_period if r.get("errorCode")))
    assert figure(html, "Critical key events") == n(sum(1 for r in in_period if r["eventName"] in CRITICAL_EVENT_NAMES))
    after = sum(1 for r in in_period if hours.is_after_hours(datetime.fromisoformat(r["eventTime"])))
    assert figure(html, "After-hours calls") == n(after)
    assert figure(html, "Active keys") == n(len({r["resources"][0]["ARN"] for r in in_period}))
    assert figure(html, "Unique principals") == n(
        Event.objects.filter(event_time__date__gte=since).exclude(principal="").values("principal").distinct().count()
    )
    calls = chart(html, "fig-calls")
    assert sum(sum(trace["y"]) for trace in calls["data"]) == len(in_period)
    per_day = Counter(r["eventTime"][:10] for r in in_period)
    plotted: Counter = Counter()
    for trace in calls["data"]:
        for x, y in zip(trace["x"], trace["y"], strict=True):
            plotted[x] += y
    assert plotted == per_day
    failures = chart(html, "fig-failures")
    assert sum(sum(t["y"]) for t in failures["data"]) == sum(1 for r in in_period if r.get("errorCode"))


def test_overview_filters_by_account_and_lists_the_latest_critical_events(pages_analyst, pages_now):
    ingest(
        [
            record("Decrypt"),
            record("DisableKey", when=NOW - timedelta(minutes=5), key=K3, account=B),
            record("PutKeyPolicy", when=NOW - timedelta(days=2), error_code="AccessDenied", error_message="denied"),
        ]
    )
    html = pages_analyst.get(reverse("audits:overview"), {"period": "7d", "account": A}).content.decode()
    assert figure(html, "KMS calls") == "2"
    assert "PutKeyPolicy" in html and "failed: AccessDenied" in html
    assert "DisableKey" not in html
    html = pages_analyst.get(reverse("audits:overview"), {"period": "7d"}).content.decode()
    assert html.index("DisableKey") < html.index("PutKeyPolicy")  # newest first


def test_overview_says_when_data_was_updated_and_warns_about_failed_or_lagging_sources(pages_analyst, pages_now):
    html = pages_analyst.get(reverse("audits:overview")).content.decode()
    assert "No ingestion run has succeeded yet" in html
    ingest([record()])
    html = pages_analyst.get(reverse("audits:overview")).content.decode()
    assert "Data updated now" in html and "Some sources are behind" not in html
    Source.objects.create(account_id=B, regions=["eu-west-1", "us-east-1"])
    lookup = IngestRun.Kind.LOOKUP
    with time_machine.travel(NOW - timedelta(hours=3), tick=False):
        IngestRun.objects.create(
            kind=lookup, account_id=B, region="eu-west-1", status="succeeded", finished_at=NOW - timedelta(hours=3)
        )
        IngestRun.objects.create(
            kind=lookup, account_id=B, region="us-east-1", status="succeeded", finished_at=NOW - timedelta(hours=3)
        )
    IngestRun.objects.create(
        kind=lookup,
        account_id=B,
        region="eu-west-1",
        status="failed",
        finished_at=NOW,
        error="AccessDenied <b>boom</b>",
    )
    IngestRun.objects.create(kind=lookup, account_id=B, region="us-east-1", status="running")
    html = pages_analyst.get(reverse("audits:overview")).content.decode()
    assert "Some sources are behind" in html
    assert re.search(
        rf"LookupEvents {B} eu-west-1:\s+last run failed \(AccessDenied &lt;b&gt;boom&lt;/b&gt;\);\s+last success 3\xa0hours ago",
        html,
    )
    assert re.search(rf"LookupEvents {B} us-east-1:\s+last success 3\xa0hours ago", html)
    IngestRun.objects.create(kind=lookup, account_id=B, region="us-east-1", status="succeeded", finished_at=NOW)
    html = pages_analyst.get(reverse("audits:overview")).content.decode()
    assert f"{B} us-east-1" not in html and f"{B} eu-west-1" in html


def test_overview_htmx_request_returns_only_the_results_fragment(pages_analyst, pages_now):
    ingest([record()])
    response = pages_analyst.get(reverse("audits:overview"), {"period": "24h"}, **HTMX)
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="results">')
    assert "<html" not in html and "filterbar" not in html
    assert "whole UTC days" in html  # 24 h is day-granular on rollups, and the page says so


def test_an_empty_period_shows_empty_states(pages_analyst, pages_now):
    html = pages_analyst.get(reverse("audits:overview")).content.decode()
    assert "No events in this period." in html
    assert figure(html, "KMS calls") == "0"


# --- keys --------------------------------------------------------------------------------------


def test_keys_page_counts_per_key_and_operation_family(pages_analyst, pages_now):
    ingest(
        [
            record("Encrypt"),
            record("Decrypt"),
            record("Decrypt", role="other"),
            record("GenerateDataKeyWithoutPlaintext"),
            record(
                "DescribeKey",
                error_code="AccessDenied",
                identity=synthetic.identity_role(A, "app", "s1", invoked_by="rds.amazonaws.com"),
            ),
            record("Decrypt", key=K2, region="eu-west-1"),
        ]
    )
    response = pages_analyst.get(reverse("audits:keys"))
    rows = {row["key"]: row for row in response.context["page"].object_list}
    assert set(rows) == {K1, K2}
    k1 = rows[K1]
    assert (k1["encrypt"], k1["decrypt"], k1["generate"], k1["other"], k1["calls"]) == (1, 2, 1, 1, 5)
    assert (k1["principals"], k1["services"], k1["failed"]) == (2, 1, 1)
    html = response.content.decode()
    assert html.index(K1) < html.index(K2)  # most calls first
    response = pages_analyst.get(reverse("audits:keys"), {"sort": "calls"})
    assert [r["key"] for r in response.context["page"].object_list] == [K2, K1]
    # Sorting by reach counts principals for every key, in another query: same figures.
    by_reach = pages_analyst.get(reverse("audits:keys"), {"sort": "-principals"}).context["page"].object_list
    assert [(r["key"], r["principals"], r["services"]) for r in by_reach] == [(K1, 2, 1), (K2, 1, 0)]


def test_keys_page_paginates_and_htmx_gets_only_the_table(pages_analyst, pages_now):
    keys = [f"arn:aws:kms:us-east-1:{A}:key/{i:08d}-0000-4000-8000-000000000000" for i in range(55)]
    ingest([record(key=key) for key in keys])
    first = pages_analyst.get(reverse("audits:keys"), {"sort": "key"})
    assert len(first.context["page"].object_list) == 50
    assert "page=2" in first.context["next_url"]
    second = pages_analyst.get(reverse("audits:keys") + first.context["next_url"], **HTMX)
    html = second.content.decode()
    assert html.lstrip().startswith('<section id="keys-table">') and "<html" not in html
    seen = [r["key"] for r in first.context["page"].object_list + second.context["page"].object_list]
    assert sorted(seen) == sorted(keys)


# --- key detail --------------------------------------------------------------------------------


def test_key_detail_by_arn_and_by_bare_key_id(pages_analyst, pages_now):
    ingest(
        [
            record(
                "Decrypt",
                encryption_context={"aws:s3:arn": "arn:aws:s3:::reports-bucket/a.csv"},
                identity={
                    "type": "AssumedRole",
                    "invokedBy": "s3.amazonaws.com",
                    "arn": f"arn:aws:sts::{A}:assumed-role/app/s1",
                    "accountId": A,
                },
            ),
            record("Encrypt", encryption_context={"tenant": "t-1"}, error_code="AccessDenied"),
            record("CreateGrant", when=NOW - timedelta(days=1)),
        ]
    )
    by_arn = pages_analyst.get(reverse("audits:key_detail", args=[K1]))
    assert by_arn.status_code == 200
    html = by_arn.content.decode()
    assert "reports-bucket" in html and "tenant" in html and "t-1" in html
    assert "s3.amazonaws.com" in html and "AccessDenied" in html and "CreateGrant" in html
    assert figure(html, "Calls") == "3" and figure(html, "Failed") == "1"
    by_id = pages_analyst.get(reverse("audits:key_detail", args=["11111111-1111-4111-8111-111111111111"]))
    assert by_id.status_code == 200 and by_id.context["arn"] == K1
    assert (
        pages_analyst.get(reverse("audits:key_detail", args=["99999999-1111-4111-8111-111111111111"])).status_code
        == 404
    )
    explorer = pages_analyst.get(by_arn.context["events_url"])
    assert {e.event_name for e in explorer.context["page"].events} == {"Decrypt", "Encrypt", "CreateGrant"}


def test_key_detail_principals_have_counts_and_first_and_last_seen(pages_analyst, pages_now):
    early, late = NOW - timedelta(days=2, hours=3), NOW - timedelta(minutes=30)
    ingest(
        [record(when=early, role="app"), record(when=late, role="app", error_code="Throttling"), record(role="other")]
    )
    response = pages_analyst.get(reverse("audits:key_detail", args=[K1]))
    app = next(p for p in response.context["principals"] if p["principal"].endswith("role/app"))
    assert (app["calls"], app["failed"]) == (2, 1)
    assert app["first_seen"] == early and app["last_seen"] == late
    link = re.search(r'href="([^"]*principal=[^"]*role%2Fapp)"', response.content.decode()).group(1)
    explorer = pages_analyst.get(unescape(link))
    assert len(explorer.context["page"].events) == 2
    assert {e.principal for e in explorer.context["page"].events} == {app["principal"]}


def test_key_detail_loads_the_inventory_panel_only_when_that_url_exists(pages_analyst, pages_now):
    ingest([record()])
    response = pages_analyst.get(reverse("audits:key_detail", args=[K1]))
    html = response.content.decode()
    if response.context["panel_url"]:
        assert f'hx-get="{response.context["panel_url"]}" hx-trigger="load"' in html
    else:
        assert "inventory-panel" not in html


# --- events explorer ---------------------------------------------------------------------------


def test_keyset_pagination_returns_every_event_exactly_once(pages_analyst, pages_now):
    same_time = NOW - timedelta(hours=3)
    records = volume(120) + [record(when=same_time) for _ in range(60)]  # ties on event_time
    ingest(records)
    seen: list[int] = []
    url = reverse("audits:events")
    pages = 0
    while url:
        response = pages_analyst.get(url, **HTMX)
        seen += [e.pk for e in response.context["page"].events]
        next_url = response.context["next_url"]
        url = reverse("audits:events") + next_url if next_url else None
        pages += 1
    assert pages == 4
    assert len(seen) == len(set(seen)) == Event.objects.count() == 180
    times = list(Event.objects.filter(pk__in=seen).values_list("event_time", "id"))
    order = {pk: i for i, pk in enumerate(seen)}
    assert sorted(times, key=lambda t: order[t[1]]) == sorted(times, reverse=True)


def test_explorer_keeps_filters_in_every_link_and_pages_within_them(pages_analyst, pages_now):
    ingest([record("Decrypt", error_code="AccessDenied") for _ in range(55)] + [record("Encrypt") for _ in range(10)])
    response = pages_analyst.get(reverse("audits:events"), {"error": "AccessDenied", "key": K1})
    assert "error=AccessDenied" in response.context["next_url"] and "key=" in response.context["next_url"]
    second = pages_analyst.get(reverse("audits:events") + response.context["next_url"])
    assert len(second.context["page"].events) == 5
    assert all(e.error_code == "AccessDenied" for e in second.context["page"].events)


def test_a_forged_cursor_shows_the_first_page_with_a_message(pages_analyst, pages_now):
    ingest([record()])
    response = pages_analyst.get(reverse("audits:events"), {"cursor": "not-a-cursor"})
    assert response.status_code == 200
    assert "cursor is not valid" in response.content.decode()
    assert len(response.context["page"].events) == 1


def test_only_admins_see_the_export_link_with_the_same_filters(client, pages_now):
    ingest([record()])
    client.force_login(make_user("ana3", "analyst"))
    assert "Export CSV" not in client.get(reverse("audits:events"), {"key": K1}).content.decode()
    client.force_login(make_user("adm", "admin"))
    response = client.get(reverse("audits:events"), {"key": K1, "error": "any"})
    assert response.context["export_params"]["error"] == "any" and response.context["export_params"]["key"] == K1
    assert 'action="/events/export.csv"' in response.content.decode() and "Export CSV" in response.content.decode()


def test_the_drawer_shows_the_whole_raw_record(pages_analyst, pages_now):
    ingest([record(request_parameters={"keyId": K1, "grantTokens": ["g1"]})])
    event = Event.objects.get()
    response = pages_analyst.get(reverse("audits:event_raw", args=[event.pk]), **HTMX)
    html = response.content.decode()
    assert "<html" not in html and '<pre class="raw">' in html
    assert "&quot;grantTokens&quot;: [" in html and event.event_id in html
    assert pages_analyst.get(reverse("audits:event_raw", args=[event.pk + 1000])).status_code == 404


# --- critical events ---------------------------------------------------------------------------


def test_critical_page_lists_only_critical_events_with_failures_marked(pages_analyst, pages_now):
    ingest(
        [
            record("Decrypt"),
            record("ScheduleKeyDeletion", source_ip="192.0.2.9", session="ops-jane"),
            record("DisableKey", error_code="AccessDenied", error_message="not allowed"),
        ]
    )
    response = pages_analyst.get(reverse("audits:critical"))
    assert {e.event_name for e in response.context["page"].events} == {"ScheduleKeyDeletion", "DisableKey"}
    html = response.content.decode()
    assert "Failed: AccessDenied" in html and "192.0.2.9" in html and "ops-jane" in html
    only = pages_analyst.get(reverse("audits:critical"), {"operation": "DisableKey"})
    assert [e.event_name for e in only.context["page"].events] == ["DisableKey"]
    assert pages_analyst.get(reverse("audits:critical"), {"operation": "Decrypt"}).context["page"].events == []


def test_critical_pagination_reaches_rare_events_spread_over_many_days(pages_analyst, pages_now):
    # 70 critical events: one per day for 60 days, and 10 within the latest hour, among plain traffic.
    critical = [record("CreateGrant", when=NOW - timedelta(days=d, hours=1)) for d in range(60)]
    critical += [record("RetireGrant", when=NOW - timedelta(minutes=m + 1)) for m in range(10)]
    ingest(critical + volume(200))
    volume_critical = Event.objects.filter(event_name__in=CRITICAL_EVENT_NAMES).count()
    seen: list[int] = []
    url = reverse("audits:critical") + "?period=90d&routine=1"
    while url:
        response = pages_analyst.get(url)
        seen += [e.pk for e in response.context["page"].events]
        url = reverse("audits:critical") + response.context["next_url"] if response.context["next_url"] else None
    assert len(seen) == len(set(seen)) == volume_critical
    assert volume_critical >= 70


def routine_grant(name="CreateGrant", **extra):
    return record(
        name, identity=synthetic.identity_role(A, "autoscaling", "s", invoked_by="ec2.amazonaws.com"), **extra
    )


def test_the_critical_page_hides_routine_service_grants_by_default_and_counts_them(pages_analyst, pages_now):
    ingest(
        [
            routine_grant(when=NOW - timedelta(hours=3)),
            routine_grant("RetireGrant", when=NOW - timedelta(hours=2)),
            # A person granting decrypt to another account is access-changing, never routine.
            record(
                "CreateGrant",
                request_parameters={
                    "keyId": K1,
                    "granteePrincipal": "arn:aws:iam::999988887777:role/outside",
                    "operations": ["Decrypt"],
                },
            ),
            record("ScheduleKeyDeletion", request_parameters={"keyId": K1, "pendingWindowInDays": 7}),
        ]
    )
    response = pages_analyst.get(reverse("audits:critical"))
    shown = [(e.event_name, cls) for e, cls, _ in response.context["rows"]]
    assert sorted(shown) == [("CreateGrant", "access-changing"), ("ScheduleKeyDeletion", "destructive")]
    assert response.context["routine_count"] == 2
    html = unescape(response.content.decode())
    assert "2 routine service grants in this period hidden" in html
    assert (
        "grants Decrypt to arn:aws:iam::999988887777:role/outside (account 999988887777 is not configured here)" in html
    )
    assert "deletion after 7 days" in html

    everything = pages_analyst.get(reverse("audits:critical"), {"routine": "1"})
    classes = Counter(cls for _, cls, _ in everything.context["rows"])
    assert classes == {"routine": 2, "access-changing": 1, "destructive": 1}
    # The overview's latest critical events leave routine grants out too.
    overview = pages_analyst.get(reverse("audits:overview"))
    assert {e.event_name for e, _, _ in overview.context["critical"]} == {"CreateGrant", "ScheduleKeyDeletion"}


def test_what_a_critical_change_did_is_shown_as_text(pages_analyst, pages_now):
    hostile = "<b>alias/x</b>"
    ingest(
        [
            record("UpdateAlias", request_parameters={"aliasName": hostile, "targetKeyId": K2}),
            record(
                "PutKeyPolicy",
                request_parameters={
                    "keyId": K1,
                    "policy": json.dumps(
                        {
                            "Statement": [
                                {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*"}
                            ]
                        }
                    ),
                },
            ),
        ]
    )
    response = pages_analyst.get(reverse("audits:critical"))
    changes = {e.event_name: change for e, _, change in response.context["rows"]}
    assert changes["UpdateAlias"] == f"{hostile} now points to {K2}"
    assert changes["PutKeyPolicy"].startswith('the policy lets in any AWS principal ("*")')
    html = response.content.decode()
    assert "<b>alias/x</b>" not in html and "&lt;b&gt;alias/x&lt;/b&gt;" in html


def test_a_key_only_the_inventory_knows_opens_by_alias_and_shows_its_name(pages_analyst, pages_now):
    from inventory.models import Alias, Key

    ingest([record(key=K2, region="eu-west-1")])
    unused = Key.objects.create(arn=K1, key_id=K1.rsplit("/", 1)[1], account_id=A, region="us-east-1", last_seen_at=NOW)
    Alias.objects.create(
        arn=f"arn:aws:kms:us-east-1:{A}:alias/payments",
        name="alias/payments",
        account_id=A,
        region="us-east-1",
        key=unused,
        last_seen_at=NOW,
    )
    response = pages_analyst.get(reverse("audits:key_detail", args=["alias/payments"]))
    assert response.status_code == 200 and response.context["arn"] == K1
    html = response.content.decode()
    assert '<h1 class="mono">alias/payments</h1>' in html and figure(html, "Calls") == "0"
    keys = pages_analyst.get(reverse("audits:keys")).content.decode()
    assert "alias/payments" not in keys  # K1 has no calls
    used = Key.objects.create(arn=K2, key_id=K2.rsplit("/", 1)[1], account_id=A, region="eu-west-1", last_seen_at=NOW)
    Alias.objects.create(
        arn=f"arn:aws:kms:eu-west-1:{A}:alias/web",
        name="alias/web",
        account_id=A,
        region="eu-west-1",
        key=used,
        last_seen_at=NOW,
    )
    keys = pages_analyst.get(reverse("audits:keys")).content.decode()
    assert "alias/web" in keys


def test_critical_pagination_is_exact_when_many_events_share_a_timestamp(pages_analyst, pages_now):
    same = NOW - timedelta(hours=2)
    ingest([record("CreateGrant", when=same) for _ in range(120)] + [record("Decrypt", when=same)])
    pages, seen, url = [], [], reverse("audits:critical")
    while url:
        response = pages_analyst.get(url)
        pages.append(len(response.context["page"].events))
        seen += [e.pk for e in response.context["page"].events]
        url = reverse("audits:critical") + response.context["next_url"] if response.context["next_url"] else None
    assert pages == [50, 50, 20]
    assert len(set(seen)) == 120
