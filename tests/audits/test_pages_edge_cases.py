"""The analysts' pages at the edges: calendar limits, odd filter values, caller-chosen key ids, figures
against the events they link to, and htmx's history restore. Each of these was a defect once."""

from __future__ import annotations

import base64
import csv
import io
import re
from datetime import date, timedelta
from urllib.parse import urljoin

import pytest
from django.urls import reverse

from audits import charts
from audits.models import Event
from tests.audits.support import K1, NOW, ingest, record
from tests.support import make_user

pytestmark = pytest.mark.django_db

RAW_BUTTON = '/raw/" hx-target'  # one per event listed


def figure(html: str, name: str) -> str:
    match = re.search(rf'<span class="figure">([\d,]+)</span><span class="caption">{name}</span>', html)
    assert match, f"no figure {name!r}"
    return match.group(1)


def calls_card_link(html: str) -> str:
    card = r'<a class="card" href="([^"]*)"><span class="figure">[\d,]+</span><span class="caption">Calls'
    match = re.search(card, html)
    assert match
    return match.group(1).replace("&amp;", "&")


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- a valid date at the edge of the calendar is a server error ---------------------------------


@pytest.mark.parametrize("name", ["audits:overview", "audits:keys", "audits:events", "audits:critical"])
def test_until_9999_12_31_is_answered_not_a_server_error(pages_analyst, pages_now, name):
    pages_analyst.raise_request_exception = False
    response = pages_analyst.get(reverse(name), {"until": "9999-12-31"})
    assert response.status_code in (200, 400), response.status_code


def test_export_until_9999_12_31_is_refused_or_complete(client, pages_now):
    client.force_login(make_user("boss", "admin"))
    response = client.post(reverse("audits:events_export"), {"until": "9999-12-31"})
    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 200:
        b"".join(response.streaming_content)  # the 200 and the header are sent before this raises


@pytest.mark.parametrize(
    "name,params",
    [
        ("audits:overview", {"period": "custom", "until": "0001-01-03"}),
        ("audits:critical", {"period": "custom", "until": "0001-01-03"}),
        ("audits:critical", {"cursor": cursor("0001-01-01T00:00:00+00:00|5")}),
    ],
    ids=["overview-until", "critical-until", "critical-cursor"],
)
def test_critical_event_windows_near_year_one_are_answered_not_a_server_error(pages_analyst, pages_now, name, params):
    ingest([record("DisableKey")])
    pages_analyst.raise_request_exception = False
    response = pages_analyst.get(reverse(name), params)
    assert response.status_code in (200, 400), response.status_code


# --- links built from key identifiers -------------------------------------------------------------


def test_a_key_link_made_of_dot_segments_does_not_lead_to_another_page(pages_analyst, pages_now):
    # A failed call with a made-up keyId is logged with that keyId: the caller chose it.
    ingest(
        [
            record(
                "Decrypt", key=None, request_parameters={"keyId": "alias/../../health"}, error_code="NotFoundException"
            )
        ]
    )
    page = reverse("audits:keys")
    hrefs = re.findall(r'<span class="key-label"><a href="([^"]*)"', pages_analyst.get(page).content.decode())
    assert hrefs
    for href in hrefs:
        # Where a browser goes: resolving a link removes its dot segments (RFC 3986 5.2.4).
        landing = urljoin("http://testserver" + page, href)
        assert landing.startswith(("http://testserver/keys/", "http://testserver/events/")), (href, landing)


# --- figures that disagree with the events they link to -----------------------------------------


def test_custom_period_inputs_keep_their_days_west_of_utc(pages_analyst, pages_now, settings):
    settings.TIME_ZONE = "America/New_York"
    asked = {"since": "2026-11-10", "until": "2026-11-12"}
    html = pages_analyst.get(reverse("audits:overview"), {"period": "custom", **asked}).content.decode()
    # The form submits these values back on its next change (hx-trigger="change").
    shown = dict(re.findall(r'<input type="date" name="(since|until)" value="([^"]*)"', html))
    assert shown == asked


def test_the_keys_page_says_its_24_hour_figures_count_whole_utc_days(pages_analyst, pages_now):
    ingest([record("Decrypt", when=NOW - timedelta(hours=1)), record("Decrypt", when=NOW - timedelta(hours=34))])
    html = pages_analyst.get(reverse("audits:keys"), {"period": "24h"}).content.decode()
    assert re.search(r'<td class="num strong">([\d,]+)</td>', html).group(1) == "2"
    assert "Figures count whole UTC days from 2026-11-19" in html


def test_the_key_page_says_its_24_hour_figures_count_whole_utc_days(pages_analyst, pages_now):
    ingest([record("Decrypt", when=NOW - timedelta(hours=1)), record("Decrypt", when=NOW - timedelta(hours=34))])
    html = pages_analyst.get(reverse("audits:key_detail", args=[K1]), {"period": "24h"}).content.decode()
    assert figure(html, "Calls") == "2"
    assert "Figures count whole UTC days from 2026-11-19" in html
    assert "whole UTC days" not in pages_analyst.get(reverse("audits:key_detail", args=[K1])).content.decode()


def test_the_key_page_applies_no_search_so_its_figures_and_links_count_alike(pages_analyst, pages_now):
    ingest([record("Decrypt", user_agent="Boto3/1.34"), record("Decrypt", user_agent="aws-cli/2")])
    html = pages_analyst.get(reverse("audits:key_detail", args=[K1]), {"q": "boto3"}).content.decode()
    link = calls_card_link(html)
    assert "q=" not in link
    listed = pages_analyst.get(link).content.decode().count(RAW_BUTTON)
    assert (figure(html, "Calls"), listed) == ("2", 2)


def test_a_chart_series_named_other_keeps_its_calls():
    rows = [{"day": date(2026, 11, 1), "error_code": f"E{i}", "calls": 100 - i} for i in range(12)]
    rows[0]["error_code"] = "Other"
    fig = charts.failures_by_error(rows)
    assert sum(trace["y"][0] for trace in fig["data"]) == sum(r["calls"] for r in rows)


def test_the_export_holds_every_event_the_explorer_shows_even_one_dated_after_now(client, pages_now):
    # The web host's clock a few minutes behind AWS's (or a record dated ahead) is enough.
    ingest([record("Decrypt", when=NOW - timedelta(hours=1)), record("Encrypt", when=NOW + timedelta(minutes=10))])
    client.force_login(make_user("boss", "admin"))
    page = client.get(reverse("audits:events"))
    listed = page.content.decode().count(RAW_BUTTON)
    # What the page's export button posts.
    body = b"".join(client.post(reverse("audits:events_export"), page.context["export_params"]).streaming_content)
    body = body.decode()
    exported = len(list(csv.reader(io.StringIO(body)))) - 1
    assert (exported, listed) == (Event.objects.count(),) * 2


# --- htmx fragments --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["audits:overview", "audits:keys", "audits:events", "audits:critical"])
def test_an_htmx_history_restore_gets_the_whole_page(pages_analyst, pages_now, name):
    # htmx 2 asks the server on a history cache miss with HX-Request *and* HX-History-Restore-Request,
    # and swaps the answer into <body>: a fragment there loses the header, nav and filter form.
    headers = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    html = pages_analyst.get(reverse(name), headers=headers).content.decode()
    assert "<html" in html and 'class="filterbar"' in html


@pytest.mark.parametrize("name", ["audits:overview", "audits:keys", "audits:events", "audits:critical"])
def test_a_url_answered_as_page_or_fragment_varies_on_hx_request(pages_analyst, pages_now, name):
    page = pages_analyst.get(reverse(name))
    fragment = pages_analyst.get(reverse(name), headers={"HX-Request": "true"})
    assert page.content != fragment.content
    for response in (page, fragment):
        assert "hx-request" in response.get("Vary", "").lower(), response.get("Vary")


# --- NUL in a filter value --------------------------------------------------------------


@pytest.mark.parametrize("param", ["principal", "key", "q"])
def test_a_nul_in_a_filter_value_is_reported_not_a_server_error(pages_analyst, pages_now, param):
    # PostgreSQL refuses NUL in a text parameter; no stored text holds one anyway.
    response = pages_analyst.get(reverse("audits:events"), {param: "a\x00b"})
    assert response.status_code == 200
    assert f"{param} must not contain a NUL character." in response.content.decode()
