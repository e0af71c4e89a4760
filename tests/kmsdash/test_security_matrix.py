"""Who may open what: every URL the resolver knows, for every kind of user, plain and htmx.

A URL added without an entry in tests/kmsdash/support.py's MATRIX fails
`test_every_url_has_a_matrix_entry`; an entry that disagrees with the roles the view declares
(kmsdash.roles.role_required) fails too.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import resolve, reverse

from kmsdash import healthz
from kmsdash.roles import ADMIN
from tests.kmsdash.support import (
    ADMIN_NAMESPACE,
    BEARER_TOKEN,
    KEY,
    LOGIN,
    MATRIX,
    PUBLIC,
    SIGN_IN_FLOW,
    SIGNED_IN,
    USERS,
    Route,
    seed_world,
    sent_to_login,
    walk,
)
from tests.support import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> dict[str, object]:
    return seed_world()


def expected_status(entry: Route, user: str) -> int | str:
    if user == "anonymous":
        return "login"
    roles, permission = USERS[user]
    allowed = ADMIN in roles or entry.roles.intersection(roles) or (entry.permission and permission == entry.permission)
    return entry.ok if allowed else 403


def call(client, entry: Route, world: dict, *, htmx: bool):
    headers = {"HX-Request": "true"} if htmx else {}
    path = entry.path.format(**world)
    return getattr(client, entry.method)(path, entry.data, headers=headers)


def assert_sent_to_login(response, path: str, *, htmx: bool = False) -> None:
    """To the login page, and back to `path` after it (htmx: by HX-Redirect, see sent_to_login)."""
    assert sent_to_login(response, htmx=htmx) == path


CASES = [(name, user, htmx) for name in MATRIX for user in USERS for htmx in (False, True)]


@pytest.mark.parametrize(("name", "user", "htmx"), CASES, ids=[f"{n}-{u}-{'hx' if h else 'page'}" for n, u, h in CASES])
def test_role_url_matrix(client, world, name, user, htmx):
    entry = MATRIX[name]
    if user != "anonymous":
        roles, permission = USERS[user]
        client.force_login(make_user(user, *roles, permission=permission))
    response = call(client, entry, world, htmx=htmx)
    expected = expected_status(entry, user)
    if expected == "login":
        assert_sent_to_login(response, entry.path.format(**world), htmx=htmx)
    else:
        assert response.status_code == expected, (name, user, response.status_code, response.content[:300])


def test_every_url_has_a_matrix_entry():
    known = set(MATRIX) | PUBLIC | SIGNED_IN | SIGN_IN_FLOW | BEARER_TOKEN
    missing = []
    for namespace, name, pattern, _ in walk():
        if namespace.split(":")[0] == ADMIN_NAMESPACE:
            continue
        if not name or name not in known:
            missing.append(name or f"(unnamed) {pattern}")
    assert not missing, f"URLs without an entry in the role matrix: {missing}"


def test_every_matrix_entry_is_a_real_url():
    names = {name for _, name, _, _ in walk()}
    assert set(MATRIX) | PUBLIC | SIGNED_IN | SIGN_IN_FLOW | BEARER_TOKEN <= names


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_the_matrix_agrees_with_the_roles_the_view_declares(name):
    entry = MATRIX[name]
    path = entry.path.format(key=KEY, event=1, finding=1, alert=1, principal="arn:aws:iam::1:role/r").split("?")[0]
    match = resolve(path)
    assert match.view_name == name
    declared = getattr(match.func, "kmsdash_roles", None)
    assert declared is not None, f"{name} declares no roles: decorate it with kmsdash.roles.role_required"
    assert frozenset(declared) == entry.roles
    assert getattr(match.func, "kmsdash_permission", "") == entry.permission


@pytest.mark.parametrize("htmx", [False, True])
def test_the_login_page_is_the_only_page_open_to_anonymous_users(client, htmx):
    headers = {"HX-Request": "true"} if htmx else {}
    assert client.get(reverse("login"), headers=headers).status_code == 200
    assert_sent_to_login(client.post(reverse("logout"), headers=headers), "/accounts/logout/", htmx=htmx)
    # No view, nothing to protect: a plain 404 that tells nothing about what exists.
    assert client.get("/no/such/page/", headers=headers).status_code == 404


@pytest.mark.parametrize(("name", "htmx"), [(name, htmx) for name in sorted(PUBLIC) for htmx in (False, True)])
def test_every_public_url_answers_anonymous_users_itself(client, name, htmx, monkeypatch):
    monkeypatch.setitem(healthz.PROBES, "broker", lambda: None)  # the file broker's folder may not exist yet
    headers = {"HX-Request": "true"} if htmx else {}
    response = client.get(reverse(name), headers=headers)
    assert response.status_code == 200
    assert not response.has_header("Location") and not response.has_header("HX-Redirect")


@pytest.mark.parametrize("user", list(USERS))
@pytest.mark.parametrize("name", sorted(BEARER_TOKEN))
def test_bearer_token_urls_refuse_every_session_whatever_its_roles(client, name, user, settings):
    settings.KMSDASH_METRICS_TOKEN = "metrics-token"
    if user != "anonymous":
        client.force_login(make_user(user, *USERS[user]))
    response = client.get(reverse(name))
    assert response.status_code == 401
    assert not response.has_header("Location") and not response.has_header("HX-Redirect")


@pytest.mark.parametrize(("name", "htmx"), [(name, htmx) for name in sorted(SIGN_IN_FLOW) for htmx in (False, True)])
def test_the_single_sign_on_steps_are_open_to_anonymous_users_and_absent_unless_enabled(client, name, htmx, settings):
    # With single sign-on on, tests/kmsdash/test_oidc_login.py drives them against a real provider.
    assert settings.KMSDASH_OIDC_ENABLED is False
    headers = {"HX-Request": "true"} if htmx else {}
    response = client.get(reverse(name), headers=headers)
    assert response.status_code == 404
    assert not response.has_header("Location") and not response.has_header("HX-Redirect")


@pytest.mark.parametrize("user", [u for u in USERS if u != "anonymous"])
def test_any_signed_in_user_can_log_out_and_the_session_is_gone(client, user):
    roles, permission = USERS[user]
    client.force_login(make_user(user, *roles, permission=permission))
    assert client.get(reverse("logout")).status_code == 405  # only POST logs out
    response = client.post(reverse("logout"))
    assert response.status_code == 302 and response["Location"] == LOGIN
    assert_sent_to_login(client.get("/health/"), "/health/")


def admin_urls() -> list[str]:
    urls = [reverse("admin:index")]
    for model in admin.site._registry:
        urls.append(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"))
    return urls


@pytest.mark.parametrize("user", list(USERS))
def test_the_django_admin_is_for_the_admin_role_only(client, user):
    if user != "anonymous":
        roles, permission = USERS[user]
        client.force_login(make_user(user, *roles, permission=permission))
    for url in admin_urls():
        response = client.get(url)
        if user == "anonymous":
            # Either login page: the admin has its own (also behind django-axes).
            assert response.status_code == 302, url
            assert response["Location"].startswith((f"{LOGIN}?next=", "/admin/login/?next=")), url
        elif user == "admin":
            assert response.status_code == 200, url
        else:
            # The admin's own staff gate: back to its login page, which says the account may not enter.
            assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url


def test_the_admin_site_registers_the_export_audit_read_only(client):
    from kmsdash.models import ExportAudit

    client.force_login(make_user("boss", ADMIN))
    audit = ExportAudit.objects.create(username="someone", kind="events")
    change = reverse("admin:kmsdash_exportaudit_change", args=[audit.pk])
    assert client.get(reverse("admin:kmsdash_exportaudit_add")).status_code == 403
    assert client.post(change, {"username": "forged", "kind": "events"}).status_code == 403
    assert client.post(reverse("admin:kmsdash_exportaudit_delete", args=[audit.pk]), {"post": "yes"}).status_code == 403
    audit.refresh_from_db()
    assert audit.username == "someone"
