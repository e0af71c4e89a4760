"""Links to a key's pages: built in one place (audits/keyurls.py), and each names exactly its key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

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
