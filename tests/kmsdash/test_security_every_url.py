"""Every URL the resolver knows, for every kind of user: HEAD answers as GET does, and every answer
to a signed-in user is `Cache-Control: private, no-store`.

test_security_cache.py and test_security_methods.py go through the role matrix, which lists the
pages with roles. These walk the URL resolver itself (tests/kmsdash/support.py's walk), so the pages
outside the matrix (the start page, the two-factor pages, the login page, the single sign-on steps,
the probes) are covered as well, and a URL added tomorrow is covered the day it is added.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from kmsdash import healthz
from tests.kmsdash.support import ADMIN_NAMESPACE, MATRIX, USERS, seed_world, walk
from tests.support import make_user

pytestmark = pytest.mark.django_db

METRICS_TOKEN = "metrics-token-for-tests"


def every_path(world: dict[str, object]) -> list[tuple[str, str]]:
    """(name, path) of every URL: the matrix's path where it has one (it fills the URL's arguments),
    else the URL reversed; then the Django admin's index and every model's list."""
    found = []
    for namespace, name, pattern, _ in walk():
        if namespace.split(":")[0] == ADMIN_NAMESPACE:
            continue
        if name in MATRIX:
            found.append((name, MATRIX[name].path.format(**world)))
        else:
            # A URL with arguments must have a matrix entry (test_security_matrix.py says so).
            assert name, f"an unnamed URL: {pattern}"
            found.append((name, reverse(name)))
    found.append(("admin:index", reverse("admin:index")))
    for model in admin.site._registry:
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"
        found.append((name, reverse(name)))
    return found


@pytest.fixture
def world(settings, monkeypatch):
    settings.KMSDASH_METRICS_TOKEN = METRICS_TOKEN
    monkeypatch.setitem(healthz.PROBES, "broker", lambda: None)  # the file broker's folder may not exist yet
    return seed_world()


def directives(response) -> set[str]:
    return {part.strip().split("=")[0] for part in response.get("Cache-Control", "").split(",") if part.strip()}


def head_differs(get, head) -> str:
    """What HEAD answered differently from GET (status, redirect, type), or a body it sent; '' if none."""
    if head.status_code == 405 and get.status_code != 405:
        return f"HEAD refused (405) where GET answers {get.status_code}"
    if head.status_code != get.status_code:
        return f"HEAD {head.status_code}, GET {get.status_code}"
    if head.get("Location") != get.get("Location") or head.get("HX-Redirect") != get.get("HX-Redirect"):
        return f"HEAD goes to {head.get('Location')}, GET to {get.get('Location')}"
    if head.get("Content-Type") != get.get("Content-Type"):
        return f"HEAD is {head.get('Content-Type')}, GET {get.get('Content-Type')}"
    if head.content:
        return f"HEAD sent a body of {len(head.content)} bytes"
    return ""


def sign_in(client, user: str) -> None:
    if user != "anonymous":
        roles, permission = USERS[user]
        client.force_login(make_user(user, *roles, permission=permission))
        # Starts an enrolment, so that the QR code of the device being enrolled has something to show.
        assert client.get(reverse("twofactor_setup")).status_code == 200


@pytest.mark.parametrize("user", list(USERS))
def test_head_answers_every_url_as_get_does_without_a_body(client, world, user):
    sign_in(client, user)
    wrong = []
    for name, path in every_path(world):
        get, head = client.get(path), client.head(path)
        if problem := head_differs(get, head):
            wrong.append(f"{name} ({path}): {problem}")
    assert wrong == []


def test_the_metrics_answer_head_with_the_token(client, world):
    # Not a session page: the bearer token (KMSDASH_METRICS_TOKEN) opens it, for GET and HEAD alike.
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    get, head = client.get(reverse("metrics"), headers=headers), client.head(reverse("metrics"), headers=headers)
    assert get.status_code == 200 and head_differs(get, head) == ""


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
@pytest.mark.parametrize("user", [user for user in USERS if user != "anonymous"])
def test_every_url_answers_a_signed_in_user_private_and_not_stored(client, world, user, htmx):
    sign_in(client, user)
    headers = {"HX-Request": "true"} if htmx else {}
    wrong = []
    for name, path in every_path(world):
        for method in ("get", "head"):
            response = getattr(client, method)(path, headers=headers)
            if not {"private", "no-store"} <= directives(response) or "public" in directives(response):
                wrong.append(
                    f"{method.upper()} {name} ({path}): {response.status_code} {response.get('Cache-Control')!r}"
                )
    assert wrong == []


def test_the_walk_reaches_the_pages_outside_the_matrix(world):
    names = {name for name, _ in every_path(world)}
    assert {"start", "login", "twofactor_setup", "twofactor_verify", "twofactor_qr", "healthz"} <= names
    assert set(MATRIX) <= names
