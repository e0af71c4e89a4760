"""Content-Security-Policy and the other response headers on every kind of HTML response."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import include, path, reverse

from kmsdash.roles import ADMIN, FINANCE
from tests.kmsdash.support import MATRIX, seed_world
from tests.support import make_user


def _boom(request):
    raise RuntimeError("a bug")


def _forbidden(request):
    raise PermissionDenied


# A URLconf with a view that fails, to see the 500 page through the whole middleware stack.
urlpatterns = [
    path("boom/", _boom),
    path("forbidden/", _forbidden),
    path("", include("kmsdash.urls")),
]

pytestmark = pytest.mark.django_db


INLINE_STYLE = re.compile(r"<style\b|<[^>]*\sstyle\s*=", re.IGNORECASE)


def policy(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"no CSP on {response.request['PATH_INFO']} ({response.status_code})"
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        tokens = part.split()
        if tokens:
            directives[tokens[0].lower()] = tokens[1:]
    return directives


def assert_strict(response) -> None:
    directives = policy(response)
    scripts = directives.get("script-src", directives.get("default-src"))
    assert scripts == ["'self'"], scripts
    for name, sources in directives.items():
        assert "'unsafe-eval'" not in sources, name
        assert "*" not in sources and "http:" not in sources and "https:" not in sources, name
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["default-src"] == ["'self'"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("htmx", [False, True])
@pytest.mark.parametrize("name", [name for name, entry in MATRIX.items() if entry.method == "get"])
def test_every_page_and_fragment_carries_the_strict_policy(client, name, htmx):
    world = seed_world()
    client.force_login(make_user("root", ADMIN))
    entry = MATRIX[name]
    response = client.get(entry.path.format(**world), headers={"HX-Request": "true"} if htmx else {})
    assert response.status_code == 200
    assert_strict(response)
    # What the page would need 'unsafe-inline' for, from a template or from code alike.
    assert not INLINE_STYLE.findall(response.content.decode()), name


def test_the_login_page_forbidden_page_and_not_found_page_carry_it(client):
    assert_strict(client.get(reverse("login")))
    client.force_login(make_user("finance-only", FINANCE))
    forbidden = client.get("/health/")
    assert forbidden.status_code == 403
    assert b"Not allowed" in forbidden.content
    assert_strict(forbidden)
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404
    assert b"Not found" in missing.content
    assert_strict(missing)
    hx_forbidden = client.get("/health/", headers={"HX-Request": "true"})
    assert hx_forbidden.status_code == 403
    assert_strict(hx_forbidden)


def test_the_django_admin_carries_it(client):
    client.force_login(make_user("root", ADMIN))
    for url in [reverse("admin:index")] + [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist") for model in admin.site._registry
    ]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert_strict(response)


@pytest.mark.urls(__name__)
def test_the_server_error_page_renders_without_context_and_carries_it():
    client = Client(raise_request_exception=False)
    client.force_login(make_user("root", ADMIN))
    response = client.get("/boom/")
    assert response.status_code == 500
    assert b"Something went wrong" in response.content
    assert b"a bug" not in response.content
    assert_strict(response)


@pytest.mark.urls(__name__)
def test_a_permission_denied_anywhere_renders_the_403_page(client):
    client.force_login(make_user("root", ADMIN))
    response = client.get("/forbidden/")
    assert response.status_code == 403
    assert b"Not allowed" in response.content
    assert_strict(response)


def test_htmx_is_configured_without_eval_script_tags_or_foreign_requests(client):
    client.force_login(make_user("root", ADMIN))
    html = client.get("/health/").content.decode()
    assert (
        """<meta name="htmx-config" content='{"allowEval": false, "allowScriptTags": false, """
        """"includeIndicatorStyles": false, "selfRequestsOnly": true}'>"""
    ) in html


def test_session_and_csrf_cookies_are_http_only_where_it_matters_and_same_site(client, settings):
    make_user("alice", ADMIN)
    client.get(reverse("login"))
    response = client.post(reverse("login"), {"username": "alice", "password": "matrix-password-not-secret"})
    assert response.status_code == 302
    session = response.cookies[settings.SESSION_COOKIE_NAME]
    assert session["httponly"] and session["samesite"] == "Lax"
