"""The capacity page: who may open it, what it shows of a planted burst, and hostile text kept inert."""

from __future__ import annotations

import json
import re

import pytest

from audits.synthetic import identity_role, identity_service
from kmsdash.roles import ANALYST, FINANCE
from tests.support import make_user

from .test_quota_report import ACCOUNT, BURST_KEY, BURST_MINUTE, REGION, burst_records, ingest, record

pytestmark = pytest.mark.django_db

HOSTILE = '<img src=x onerror=alert(1)>"=cmd'


@pytest.fixture
def burst(settings):
    settings.KMSDASH_KMS_QUOTAS = {(ACCOUNT, REGION, "symmetric"): 20.0}
    hostile = [
        record(5000 + n, BURST_MINUTE, identity=identity_role(ACCOUNT, HOSTILE, "s"), event_name="GenerateDataKey")
        for n in range(4)
    ] + [record(6000 + n, BURST_MINUTE, identity=identity_service(HOSTILE)) for n in range(2)]
    ingest(burst_records() + hostile)


def page(client, role: str = ANALYST, **params):
    client.force_login(make_user(f"user-{role}", role))
    return client.get("/capacity/", {"period": "custom", "since": "2026-11-20", "until": "2026-11-20", **params})


def test_an_analyst_sees_the_burst_minute_its_rate_and_share_of_the_quota(client, burst):
    response = page(client)
    assert response.status_code == 200
    text = response.content.decode()
    assert "2026-11-20 10:15" in text
    assert "17.1/s" in text  # (1,020 + 3 + 6 hostile) calls / 60
    assert "85.8%" in text
    assert 'href="/capacity/"' in text  # in the navigation


def test_the_page_names_the_peak_minutes_top_key_and_the_data_key_callers_with_the_rate_saved(client, burst):
    text = page(client).content.decode()
    callers = text.split("Who drives the peak minutes", 1)[1]
    assert callers.index(BURST_KEY.rsplit("/", 1)[1][:8]) < callers.index("What a data-key cache")
    assert "role/batch" in callers
    # 1,020 Decrypt calls of the batch role at a 0.9 hit rate: 15.3/s saved.
    assert "15.3/s" in text.split("What a data-key cache would relieve", 1)[1]


def test_the_charts_carry_the_quota_line_and_the_throttled_minute(client, burst):
    text = page(client).content.decode()
    figures = [json.loads(_unescape(m)) for m in re.findall(r'data-figure-json="([^"]*)"', text)]
    headroom, throttled = figures[0], figures[1]
    assert any(trace["name"] == "Quota" and trace["y"] == [100, 100] for trace in headroom["data"])
    assert max(headroom["data"][0]["y"]) == 85.75
    assert throttled["data"][0]["y"] == [30]


def test_hostile_principal_and_service_text_is_escaped_everywhere(client, burst):
    text = page(client).content.decode()
    assert "<img src=x" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_finance_alone_may_not_open_it_and_htmx_gets_the_fragment(client, burst):
    assert page(client, FINANCE).status_code == 403
    client.logout()
    response = page(client, ANALYST, account=ACCOUNT)
    fragment = client.get("/capacity/", {"account": ACCOUNT}, headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and b"<html" not in fragment.content and b"capacity-results" in fragment.content
    assert response.status_code == 200


def test_a_bad_filter_says_so_and_shows_nothing(client, burst):
    response = page(client, account="not-an-account")
    assert response.status_code == 200
    assert b"No calls counted against a request quota" in response.content


def _unescape(value: str) -> str:
    import html

    return html.unescape(value)
