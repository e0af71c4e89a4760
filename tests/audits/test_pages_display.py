"""Attacker-chosen text from CloudTrail records renders as inert, visible text everywhere."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse

from audits import charts
from audits.models import Event
from audits.templatetags.kmsdash_tags import clip, visible
from tests.audits.support import HOSTILE_ERROR, HOSTILE_ROLE, HOSTILE_UA, K1, NOW, ingest, record

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
HTML_CONTEXT_VALUE = "<svg/onload=alert(2)>"
SCRIPT_TAG = re.compile(r"<script(?![^>]*(?:type=\"application/json\"|src=))", re.I)


@pytest.fixture
def hostile(pages_now):
    ingest(
        [
            record(
                "Decrypt",
                role=HOSTILE_ROLE,
                user_agent=HOSTILE_UA,
                error_code="AccessDenied",
                error_message=HOSTILE_ERROR,
                encryption_context={"__proto__": HTML_CONTEXT_VALUE, "constructor": "<b>x</b>"},
            ),
            record("DisableKey", role=HOSTILE_ROLE, user_agent=HOSTILE_UA, when=NOW - timedelta(minutes=3)),
            record("Encrypt"),
        ]
    )
    return Event.objects.get(event_name="Decrypt")


def assert_inert(html: str) -> None:
    for raw in (HOSTILE_UA, HOSTILE_ERROR, HTML_CONTEXT_VALUE, "<b>x</b>"):
        assert raw not in html
    assert "\u202e" not in html
    # The only <script> elements are the static ones and json_script data blocks.
    assert not SCRIPT_TAG.search(html.replace("<script src=", "")), SCRIPT_TAG.findall(html)
    assert "onerror=alert(1)>" not in html


@pytest.mark.parametrize(
    "url_name,args,params",
    [
        ("audits:overview", [], {}),
        ("audits:keys", [], {}),
        ("audits:key_detail", [K1], {}),
        ("audits:events", [], {}),
        ("audits:critical", [], {}),
    ],
)
@pytest.mark.parametrize("htmx", [False, True])
def test_hostile_strings_are_escaped_on_pages_and_fragments(pages_analyst, hostile, url_name, args, params, htmx):
    response = pages_analyst.get(reverse(url_name, args=args), params, **(HTMX if htmx else {}))
    assert response.status_code == 200
    html = response.content.decode()
    assert_inert(html)
    if url_name in ("audits:events", "audits:critical"):
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "evil⟨U+202E⟩txt.exe" in html
    if url_name == "audits:events":
        assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    if url_name == "audits:key_detail":
        assert "__proto__" in html and "&lt;svg/onload=alert(2)&gt;" in html
        assert "evil⟨U+202E⟩txt.exe" in html


def test_the_drawer_escapes_the_raw_record_and_shows_bidi_controls(pages_analyst, hostile):
    html = pages_analyst.get(reverse("audits:event_raw", args=[hostile.pk]), **HTMX).content.decode()
    assert_inert(html)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;__proto__&quot;: &quot;&lt;svg/onload=alert(2)&gt;&quot;" in html
    assert "evil⟨U+202E⟩txt.exe" in html


def test_chart_data_cannot_break_out_of_its_attribute_and_labels_are_plain_text(pages_analyst, pages_now):
    ingest([record("Decrypt", error_code=HOSTILE_ERROR[:60])])
    for headers in ({}, HTMX):
        html = pages_analyst.get(reverse("audits:overview"), **headers).content.decode()
        attribute = re.search(r'id="fig-failures" data-figure-json="([^"]*)"', html).group(1)
        assert "<" not in attribute and ">" not in attribute
        names = [trace["name"] for trace in json.loads(unescape(attribute))["data"]]
        assert names == ["&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"]


def test_chart_labels_lose_markup_schemes_and_invisible_controls():
    assert charts.label('<a href="javascript:alert(1)">x</a>') == '&lt;a href="javascript∶alert(1)"&gt;x&lt;/a&gt;'
    assert "javascript:" not in charts.label("JavaScript :alert(1)").lower().replace(" ", "")
    assert charts.label("a\u202eb & c") == "a⟨U+202E⟩b &amp; c"
    assert len(charts.label("x" * 500)) == charts.LABEL_MAX


def test_stacked_bars_keep_the_largest_series_and_sum_the_rest_into_other():
    from datetime import date

    rows = [{"day": date(2026, 11, 1), "operation": f"Op{i}", "calls": 100 - i} for i in range(12)]
    figure = charts.calls_by_operation(rows)
    names = [trace["name"] for trace in figure["data"]]
    assert names[:2] == ["Op0", "Op1"] and names[-1] == "Other" and len(names) == charts.MAX_SERIES
    assert sum(trace["y"][0] for trace in figure["data"]) == sum(r["calls"] for r in rows)


@pytest.mark.parametrize(
    "text,shown",
    [
        ("plain text", "plain text"),
        ("a\u202eb", "a⟨U+202E⟩b"),
        ("\u2066x\u2069", "⟨U+2066⟩x⟨U+2069⟩"),
        ("l\u200er\u200f", "l⟨U+200E⟩r⟨U+200F⟩"),
        ("line\r\nINFO forged", "line⟨U+000D⟩⟨U+000A⟩INFO forged"),
        ("nul\x00", "nul⟨U+0000⟩"),
        ("zero\u200bwidth", "zero⟨U+200B⟩width"),
        ("café ü 日本", "café ü 日本"),
    ],
)
def test_visible_shows_control_and_bidi_characters_as_markers(text, shown):
    assert visible(text) == shown


def test_clip_truncates_long_fields_for_lists():
    assert len(clip("u" * 100_000)) == 256
    assert clip("short") == "short"


def test_a_huge_user_agent_is_truncated_in_the_list_and_whole_in_the_drawer(pages_analyst, pages_now):
    agent = "A" * 1000
    ingest([record(user_agent=agent)])
    listing = pages_analyst.get(reverse("audits:events")).content.decode()
    assert agent not in listing and "A" * 255 + "…" in listing
    event = Event.objects.get()
    assert agent in pages_analyst.get(reverse("audits:event_raw", args=[event.pk])).content.decode()


def test_a_key_that_no_url_can_carry_links_to_the_explorer_instead(pages_analyst, pages_now):
    ingest([record(key=None, request_parameters={"keyId": "alias/bad\nname"})])
    html = pages_analyst.get(reverse("audits:events")).content.decode()
    assert "/events/?key=alias%2Fbad%0Aname" in html


def test_hostile_text_in_attributes_cannot_open_a_new_element_or_attribute(pages_analyst, pages_now):
    key = 'alias/x"><svg/onload=alert(1)>'
    agent = 'x" hx-get="/events/export.csv" hx-trigger="load'
    ingest([record(key=None, request_parameters={"keyId": key}, user_agent=agent)])
    for name in ("audits:events", "audits:overview", "audits:keys"):
        html = pages_analyst.get(reverse(name)).content.decode()
        assert "<svg" not in html and 'hx-get="/events/export.csv"' not in html
        assert 'title="alias/x&quot;&gt;&lt;svg/onload=alert(1)&gt;"' in html
