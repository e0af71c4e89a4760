"""The overview and the key page chart calls per hour for 24 hours and 7 days, per day beyond."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse

from audits import charts, selectors
from audits.filters import Bound, EventFilter
from tests.audits.support import K1, K2, NOW, ingest, record

pytestmark = pytest.mark.django_db


@pytest.fixture
def night(pages_now):
    # "What happened last night": 3 calls at 02:xx, one of them failed, 1 at 09:xx, and K2 at 02:xx.
    ingest(
        [
            record("Decrypt", when=NOW.replace(hour=2, minute=5)),
            record("Decrypt", when=NOW.replace(hour=2, minute=40)),
            record("Decrypt", when=NOW.replace(hour=2, minute=41), error_code="AccessDenied"),
            record("Encrypt", when=NOW.replace(hour=9, minute=0)),
            record("Encrypt", key=K2, region="eu-west-1", when=NOW.replace(hour=2, minute=10)),
            record("Encrypt", when=NOW - timedelta(days=20)),
        ]
    )


def figure(html: str, figure_id: str) -> dict | None:
    found = re.search(rf'id="{figure_id}" data-figure-json="([^"]*)"', html)
    return json.loads(unescape(found.group(1))) if found else None


def by_hour(fig: dict) -> dict[str, tuple[int, int]]:
    ok, bad = fig["data"]
    return {x: (ok["y"][i], bad["y"][i]) for i, x in enumerate(ok["x"])}


def test_calls_per_hour_come_from_the_hourly_summary_to_the_hour(night):
    f = EventFilter(since=Bound(NOW - timedelta(hours=24), False))
    rows = selectors.calls_per_hour(f)
    assert [(r["hour"].hour, r["calls"], r["failed"]) for r in rows] == [(2, 4, 1), (9, 1, 0)]
    assert [r["calls"] for r in selectors.calls_per_hour(f.replace(key=K1))] == [3, 1]
    assert [r["calls"] for r in selectors.calls_per_hour(f.replace(region="eu-west-1"))] == [1]
    assert selectors.calls_per_hour(f.replace(principal="x")) is None  # KeyHour has no principal


def test_the_overview_shows_calls_per_hour_for_24_hours_and_7_days(pages_analyst, night):
    for period in ("24h", "7d"):
        html = pages_analyst.get(reverse("audits:overview"), {"period": period}).content.decode()
        fig = figure(html, "fig-hourly")
        assert by_hour(fig) == {"2026-11-20 02:00": (3, 1), "2026-11-20 09:00": (1, 0)}, period
        assert "Calls per hour" in html
        assert figure(html, "fig-calls") is not None  # the day chart by operation stays
    html = pages_analyst.get(reverse("audits:overview"), {"period": "30d"}).content.decode()
    assert figure(html, "fig-hourly") is None and figure(html, "fig-calls") is not None


def test_the_key_page_shows_its_own_calls_per_hour(pages_analyst, night):
    html = pages_analyst.get(reverse("audits:key_detail", args=[K1]), {"period": "24h"}).content.decode()
    assert by_hour(figure(html, "fig-key-hourly")) == {"2026-11-20 02:00": (2, 1), "2026-11-20 09:00": (1, 0)}
    fragment = pages_analyst.get(reverse("audits:key_detail", args=[K1]), {"period": "7d"}, HTTP_HX_REQUEST="true")
    assert figure(fragment.content.decode(), "fig-key-hourly") is not None
    html = pages_analyst.get(reverse("audits:key_detail", args=[K1]), {"period": "90d"}).content.decode()
    assert figure(html, "fig-key-hourly") is None


def test_hours_are_shown_in_the_site_time_zone(pages_analyst, night, settings):
    settings.TIME_ZONE = "Europe/Paris"
    html = pages_analyst.get(reverse("audits:overview"), {"period": "24h"}).content.decode()
    assert set(by_hour(figure(html, "fig-hourly"))) == {"2026-11-20 03:00", "2026-11-20 10:00"}
    assert "hours in Europe/Paris" in html


def test_the_hourly_chart_is_data_only():
    from datetime import UTC, datetime

    fig = charts.calls_per_hour([{"hour": datetime(2026, 11, 20, 2, tzinfo=UTC), "calls": 5, "failed": 2}])
    assert [t["name"] for t in fig["data"]] == ["Succeeded", "Failed"]
    assert [t["y"] for t in fig["data"]] == [[3], [2]]
    json.dumps(fig)
