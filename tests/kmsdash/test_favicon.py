"""Every page names the site's icon, a static file, so no browser asks for a missing /favicon.ico."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

from tests.support import make_user

pytestmark = pytest.mark.django_db

ICON = re.compile(r'<link rel="icon" href="(/static/kmsdash/favicon[^"]*\.svg)" type="image/svg\+xml">')


@pytest.mark.parametrize(
    "path", ["/", "/keys/", "/events/", "/critical/", "/findings/", "/costs/", "/health/", "/admin/"]
)
def test_every_page_links_the_icon(client, path):
    client.force_login(make_user("boss", "admin"))
    html = client.get(path).content.decode()
    assert ICON.search(html), path


def test_the_login_and_error_pages_link_it_too(client):
    assert ICON.search(client.get(reverse("login")).content.decode())
    from django.template.loader import render_to_string

    assert ICON.search(render_to_string("500.html"))


def test_the_icon_is_a_static_file():
    path = finders.find("kmsdash/favicon.svg")
    assert path and open(path).read().startswith("<svg")
