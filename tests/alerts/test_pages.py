"""The analysts' alert pages: the list and its filters, the alert page with its chart, sample
events and actions, the navigation's count, and hostile text kept as text."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

import pytest
import time_machine

from alerts.models import Alert, AlertStateChange, Kind, State
from audits import synthetic
from tests.alerts.support import FOREIGN, K1, K2, A, T, hourly, ingest, rec
from tests.support import make_user

pytestmark = pytest.mark.django_db

HOSTILE = '<img src=x onerror=alert(1)>"\u202e'


@pytest.fixture
def analyst(client):
    client.force_login(make_user("ana", "analyst"))
    return client


@pytest.fixture
def burst(notified):
    """A failure burst by a principal whose name, user agent and error text are hostile."""
    with time_machine.travel(T + timedelta(hours=2), tick=False):
        identity = synthetic.identity_user(A, HOSTILE)
        ingest(
            hourly(per_hour=2, identity=identity)
            + [
                rec(when=T + timedelta(seconds=5 * i), identity=identity, error="AccessDenied", user_agent=HOSTILE)
                for i in range(200)
            ]
        )
        notified.evaluate()
    return Alert.objects.get(kind=Kind.FAILURE_BURST)


def test_the_list_shows_open_alerts_and_filters_by_kind_and_principal(analyst, burst):
    page = analyst.get("/alerts/")
    assert page.status_code == 200 and f'href="/alerts/{burst.pk}/"' in page.content.decode()
    assert burst.pk not in [a.pk for a in analyst.get("/alerts/?kind=volume-spike").context["alerts"]]
    fragment = analyst.get("/alerts/", {"principal": burst.principal}, headers={"HX-Request": "true"})
    text = fragment.content.decode()
    assert f'href="/alerts/{burst.pk}/"' in text and "<h1>" not in text  # the fragment only
    other = analyst.get("/alerts/", {"principal": "arn:aws:iam::111122223333:role/nobody"})
    assert list(other.context["alerts"]) == []
    bad = analyst.get("/alerts/?account=12")
    assert list(bad.context["alerts"]) == []


def test_the_navigation_counts_open_alerts(analyst, burst):
    assert re.search(r'Alerts <span class="badge"[^>]*>1</span>', analyst.get("/findings/").content.decode())
    Alert.objects.update(state=State.ACKNOWLEDGED)
    assert 'class="badge"' not in analyst.get("/findings/").content.decode()


def test_the_alert_page_shows_evidence_a_baseline_chart_and_links_to_its_events(analyst, burst):
    page = analyst.get(f"/alerts/{burst.pk}/")
    text = page.content.decode()
    assert page.status_code == 200
    figure = json.loads(html.unescape(re.search(r'data-figure-json="([^"]*)"', text).group(1)))
    names = [trace["name"] for trace in figure["data"]]
    assert names == ["Baseline (median)", "Threshold", "Failures"]
    burst_hour = T.isoformat()
    bars = dict(zip(figure["data"][2]["x"], figure["data"][2]["y"], strict=True))
    assert bars[burst_hour] == 200
    assert len(page.context["events"]) == 20
    events_url = page.context["events_url"]
    assert "error=AccessDenied" in events_url and "principal=" in events_url
    explorer = analyst.get(events_url)
    assert len(explorer.context["page"].events) == 50  # the explorer's first page of the burst's 200


def test_a_chart_without_a_threshold_draws_its_baseline_median_as_numbers(analyst, notified):
    # new-principal (like after-hours-unusual and the critical kinds) charts the median alone.
    with time_machine.travel(T + timedelta(hours=2), tick=False):
        ingest(hourly(per_hour=2) + [rec(identity=synthetic.identity_role(FOREIGN, "thief", "t-1"))])
        notified.evaluate()
    alert = Alert.objects.get(kind=Kind.NEW_PRINCIPAL)
    text = analyst.get(f"/alerts/{alert.pk}/").content.decode()
    figure = json.loads(html.unescape(re.search(r'data-figure-json="([^"]*)"', text).group(1)))
    assert [trace["name"] for trace in figure["data"]] == ["Baseline (median)", "Calls"]
    medians = figure["data"][0]["y"]
    assert medians and all(isinstance(m, int | float) for m in medians)
    assert dict(zip(figure["data"][1]["x"], figure["data"][1]["y"], strict=True))[T.isoformat()] == 1


def test_hostile_text_is_escaped_on_both_pages(analyst, burst):
    for url in ("/alerts/", f"/alerts/{burst.pk}/"):
        text = analyst.get(url).content.decode()
        assert "<img" not in text and "onerror=alert(1)>" not in text
        assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_actions_are_recorded_with_who_when_and_comment(analyst, burst):
    response = analyst.post(f"/alerts/{burst.pk}/act/", {"action": "acknowledge", "comment": "on it <b>"})
    assert response.status_code == 302
    analyst.post(f"/alerts/{burst.pk}/act/", {"action": "snooze", "hours": "4"})
    analyst.post(f"/alerts/{burst.pk}/act/", {"action": "resolve", "comment": "fixed"})
    changes = list(AlertStateChange.objects.filter(alert=burst).values_list("user__username", "to_state", "comment"))
    assert changes[1:] == [("ana", "acknowledged", "on it <b>"), ("ana", "snoozed", ""), ("ana", "resolved", "fixed")]
    assert analyst.post(f"/alerts/{burst.pk}/act/", {"action": "acknowledge"}).status_code == 400
    assert analyst.post(f"/alerts/{burst.pk}/act/", {"action": "delete"}).status_code == 400
    assert "on it &lt;b&gt;" in analyst.get(f"/alerts/{burst.pk}/").content.decode()


def test_actions_need_a_post_with_a_csrf_token(burst):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("ana2", "analyst"))
    assert client.get(f"/alerts/{burst.pk}/act/").status_code == 405
    assert client.post(f"/alerts/{burst.pk}/act/", {"action": "resolve"}).status_code == 403
    assert Alert.objects.get(pk=burst.pk).state == State.OPEN


def test_a_finding_alert_page_renders_without_chart_or_events(analyst, notified):
    from inventory.models import Finding

    Finding.objects.create(
        fingerprint="c" * 64,
        kind=Finding.Kind.POLICY_PUBLIC,
        severity="critical",
        key=K2,
        account_id=A,
        region="us-east-1",
        summary=HOSTILE,
        first_seen_at=T,
        last_seen_at=T,
    )
    notified.evaluate()
    alert = Alert.objects.get(kind=Kind.FINDING)
    page = analyst.get(f"/alerts/{alert.pk}/")
    assert page.status_code == 200 and page.context["figure"] is None and page.context["events"] == []
    assert "<img" not in page.content.decode()
    ingest([rec(key=K1)])  # unrelated
