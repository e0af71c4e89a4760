"""Links to a key's pages: built in one place (audits/keyurls.py), and each names exactly its key."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from django.conf import settings
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from audits.keyurls import key_url
from audits.models import Event
from tests.audits.support import ingest, record

ROOT = Path(settings.BASE_DIR)
HELPER = "audits/keyurls.py"
SKIP_DIRS = {"migrations", "__pycache__", ".venv", "node_modules", "vendor"}
KEY_VIEWS = r"(audits:key_detail|inventory:key_panel)"

HAND_BUILT = {
    "a key path written out": re.compile(r"/keys/(\{|%s|%\(|[\"']\s*\+|\s*[\"']\s*\.\s*format)"),
    "a key view reversed outside audits/keyurls.py": re.compile(rf"reverse(_lazy)?\(\s*[\"']{KEY_VIEWS}[\"']"),
    "a key view named by {% url %}": re.compile(rf"{{%\s*url\s+[\"']{KEY_VIEWS}[\"']"),
}


def sources() -> list[Path]:
    found = []
    for root in ("templates", "kmsdash", "audits", "costs", "inventory", "demo"):
        for path in (ROOT / root).rglob("*"):
            if path.suffix in (".py", ".html", ".txt") and not SKIP_DIRS.intersection(path.relative_to(ROOT).parts):
                found.append(path)
    return sorted(found)


def test_no_template_or_module_builds_a_key_url_by_hand():
    paths = sources()
    assert len(paths) > 30
    found = []
    for path in paths:
        relative = str(path.relative_to(ROOT))
        if relative == HELPER:
            continue
        text = path.read_text(encoding="utf-8")
        for rule, pattern in HAND_BUILT.items():
            for match in pattern.finditer(text):
                found.append(f"{relative}:{text.count(chr(10), 0, match.start()) + 1}: {rule}")
    assert found == []


@pytest.mark.parametrize(
    "text",
    [
        '<a href="/keys/{{ row.cost.key|urlencode }}/">',
        "<a href=\"{% url 'audits:key_detail' key %}\">",
        'url = f"/keys/{arn}/"',
        'url = "/keys/" + arn',
        "url = '/keys/%s/' % arn",
        'reverse("inventory:key_panel", kwargs={"key": arn})',
        "reverse('audits:key_detail', args=[key])",
    ],
)
def test_the_scan_catches_every_way_of_building_one(text):
    assert any(pattern.search(text) for pattern in HAND_BUILT.values())


@pytest.mark.parametrize("text", ['<a href="/keys/">Keys</a>', "{{ key|key_url }}", "reverse('audits:keys')"])
def test_the_scan_leaves_other_links_alone(text):
    assert not any(pattern.search(text) for pattern in HAND_BUILT.values())


# --- each URL names exactly its key ------------------------------------------------------------

HOSTILE_KEYS = [
    "alias/app/inventory",
    " alias/pad",
    "alias/pad ",
    "alias/pad\u2028",
    "\u2028alias/pad",
    "alias/pad\t",
    "alias/pad\n",
    "alias/pa\nd",
    "alias/pa\u2028d",
    "alias/pad/",
    "alias//pad",
    "alias/%2e%2e/pad",
    "alias/pad?x=1#y",
    "alias/../pad",
]


def resolved_key(url: str) -> tuple[str, str]:
    """(view name, key) for the URL a browser lands on from a link `url` on /keys/."""
    from django.http import QueryDict
    from django.urls import resolve

    from audits.filters import EventFilter

    # As a browser resolves the link (dot segments, RFC 3986 5.2.4) and Django decodes the path.
    landing = urlsplit(urljoin("http://testserver/keys/", url))
    match = resolve(unquote(landing.path))
    if match.view_name == "audits:events":
        return match.view_name, EventFilter.from_querydict(QueryDict(landing.query)).key
    return match.view_name, match.kwargs["key"]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_a_key_link_leads_to_that_key_and_no_other(key):
    assert resolved_key(key_url(key)) in (("audits:key_detail", key), ("audits:events", key))


@given(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), min_size=1, max_size=60))
@hyp_settings(max_examples=300, deadline=None)
def test_any_key_link_leads_to_that_key_and_no_other(key):
    assert resolved_key(key_url(key)) in (("audits:key_detail", key), ("audits:events", key))


@pytest.mark.parametrize(
    "key", ["alias/app", "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"]
)
def test_the_inventory_fragment_has_its_own_prefix(key):
    from audits.keyurls import key_panel_url

    assert resolved_key(key_panel_url(key)) == ("inventory:key_panel", key)


@pytest.mark.django_db
def test_each_key_page_counts_exactly_its_own_key(pages_analyst, pages_now):
    keys = ["alias/app", *HOSTILE_KEYS]
    ingest(
        [
            record("Decrypt", key=None, request_parameters={"keyId": key}, error_code="NotFoundException")
            for key in keys
            for _ in range(keys.index(key) + 1)
        ]
    )
    stored = set(Event.objects.values_list("key", flat=True))
    for key in keys:
        if key not in stored:
            continue  # normalised at ingestion: not a key anything links to
        response = pages_analyst.get(key_url(key))
        assert response.status_code == 200, key
        if "arn" in response.context:
            assert response.context["arn"] == key
            assert response.context["totals"]["calls"] == keys.index(key) + 1, key
        else:
            assert {event.key for event in response.context["page"].events} == {key}, key
    assert {"alias/pa\u2028d", "alias/app/inventory", "alias/pa\nd"} <= stored


@pytest.mark.django_db
@pytest.mark.parametrize(
    "key", [" alias/pad", "alias/pad ", "alias/pad\u2028", "\u2028alias/pad", "alias/pad/inventory"]
)
def test_a_url_naming_another_key_than_a_stored_one_finds_nothing(pages_analyst, pages_now, key):
    ingest([record("Decrypt", key=None, request_parameters={"keyId": "alias/pad"}, error_code="NotFoundException")])
    response = pages_analyst.get(key_url(key))
    assert response.status_code == 404
    assert response.context is None or "arn" not in response.context
