"""Explorer rows stay one or two lines: long values are cut by CSS, whole in their title and in the
drawer, and hostile text stays inert and visible in the cut form too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

from audits.models import Event
from tests.audits.support import HOSTILE_UA, RLO, ingest, record

pytestmark = pytest.mark.django_db

LONG_UA = "aws-sdk-java/2.20 " + "x" * 600 + f" {HOSTILE_UA} evil{RLO}gpj.exe"
LONG_ERROR = "User: arn:aws:sts::111122223333:assumed-role/app/s1 is not authorized " * 20 + f"{RLO}<b>x</b>"
LONG_ROLE = "r" * 60 + RLO + "txt.exe"


@pytest.fixture
def long_event(pages_now):
    ingest(
        [
            record(
                role=LONG_ROLE,
                session="s" * 64,
                user_agent=LONG_UA,
                error_code="AccessDenied",
                error_message=LONG_ERROR,
            )
        ]
    )
    return Event.objects.get()


def cells(html: str) -> list[str]:
    body = html[html.index("<tbody>") : html.index("</tbody>")]
    return re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)


def test_long_values_are_cut_to_a_line_with_the_text_in_the_title(pages_analyst, long_event):
    html = pages_analyst.get(reverse("audits:events")).content.decode()
    row = cells(html)
    ua = next(cell for cell in row if "aws-sdk-java" in cell)
    assert re.fullmatch(r'<span class="cut" title="[^"<>]*">[^<>]*</span>', ua), ua
    title = re.search(r'title="([^"]*)"', ua).group(1)
    assert title.startswith("aws-sdk-java/2.20 xxx") and len(title) > 256 and "<" not in title
    principal = next(cell for cell in row if "assumed-role" in cell or "r" * 60 in cell)
    assert principal.count('class="cut wide') == 2  # the principal and its session, one line each
    assert " style=" not in html  # the CSP forbids inline styles: the cut is the stylesheet's


def test_hostile_text_is_escaped_and_its_bidi_controls_visible_in_the_cut_form(pages_analyst, long_event):
    html = pages_analyst.get(reverse("audits:events")).content.decode()
    assert RLO not in html and HOSTILE_UA not in html and "<b>x</b>" not in html
    assert f"r{'r' * 59}⟨U+202E⟩txt.exe" in html  # in the cell and in its title
    title = re.search(r'<span class="cut wide" title="([^"]*)"', html).group(1)
    assert "⟨U+202E⟩txt.exe" in title
    raw = pages_analyst.get(reverse("audits:event_raw", args=[long_event.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "evil⟨U+202E⟩gpj.exe" in raw and "&lt;img src=x onerror=alert(1)&gt;" in raw
    assert "x" * 600 in raw and "s" * 64 in raw  # whole in the drawer


def test_the_stylesheet_cuts_explorer_cells_to_one_line():
    css = (Path(__file__).parent.parent.parent / "static" / "kmsdash" / "app.css").read_text()
    rule = re.search(r"table\.events \.cut \{([^}]*)\}", css).group(1)
    for declaration in ("white-space:nowrap", "overflow:hidden", "text-overflow:ellipsis", "unicode-bidi:isolate"):
        assert declaration in rule
