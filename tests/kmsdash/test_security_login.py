"""Brute-force protection on the login form (django-axes), per (username, client address)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.support import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "the-right-password-7"


@pytest.fixture(autouse=True)
def users():
    for name in ("alice", "bob"):
        get_user_model().objects.create_user(name, password=PASSWORD)


def login(client, username: str, password: str, ip: str = "198.51.100.1", forwarded_for: str | None = None):
    extra = {"REMOTE_ADDR": ip}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    client.cookies.clear()
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/start/"


def fail(client, username: str, times: int, **where) -> None:
    for _ in range(times):
        response = login(client, username, "wrong", **where)
        assert response.status_code in (200, 429) and not logged_in(response)


def test_after_the_failure_limit_even_the_right_password_is_refused(client, settings):
    fail(client, "alice", settings.AXES_FAILURE_LIMIT - 1)
    assert logged_in(login(client, "alice", PASSWORD)) is True  # below the limit: still fine
    fail(client, "alice", settings.AXES_FAILURE_LIMIT)
    response = login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert "_auth_user_id" not in client.session
    assert response["Content-Security-Policy"]


def test_a_success_resets_the_count(client, settings):
    for _ in range(3):
        fail(client, "alice", settings.AXES_FAILURE_LIMIT - 1)
        assert logged_in(login(client, "alice", PASSWORD))


def test_one_locked_pair_does_not_lock_other_users_or_other_addresses(client, settings):
    fail(client, "alice", settings.AXES_FAILURE_LIMIT, ip="203.0.113.66")
    assert login(client, "alice", PASSWORD, ip="203.0.113.66").status_code == 429
    assert logged_in(login(client, "bob", PASSWORD, ip="203.0.113.66"))
    assert logged_in(login(client, "alice", PASSWORD, ip="198.51.100.20"))


def test_without_a_trusted_proxy_a_forged_forwarded_for_header_changes_nothing(client, settings):
    assert settings.KMSDASH_TRUSTED_PROXY_COUNT == 0
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        response = login(client, "alice", "wrong", ip="203.0.113.66", forwarded_for=f"10.9.8.{attempt}")
    assert response.status_code == 429
    response = login(client, "alice", PASSWORD, ip="203.0.113.66", forwarded_for="10.1.1.1")
    assert response.status_code == 429


def test_behind_a_trusted_proxy_the_client_is_the_address_the_proxy_saw(client, settings):
    settings.KMSDASH_TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.2"
    # The attacker rotates the part of X-Forwarded-For it controls; the proxy appends the real address.
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        login(client, "alice", "wrong", ip=proxy, forwarded_for=f"10.9.8.{attempt}, 203.0.113.66")
    assert login(client, "alice", PASSWORD, ip=proxy, forwarded_for="10.1.1.1, 203.0.113.66").status_code == 429
    # Everyone else comes through the same proxy and is not locked out with the attacker.
    assert logged_in(login(client, "alice", PASSWORD, ip=proxy, forwarded_for="198.51.100.7"))
    assert logged_in(login(client, "bob", PASSWORD, ip=proxy, forwarded_for="203.0.113.66"))


def test_the_admin_login_page_is_protected_the_same_way(client, settings):
    user = get_user_model().objects.get(username="alice")
    user.is_staff = True
    user.save()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": "alice", "password": "wrong"}, REMOTE_ADDR="203.0.113.9")
    response = client.post("/admin/login/", {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 429


def test_csrf_is_enforced_for_htmx_posts_and_the_page_gives_htmx_the_token():
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(get_user_model().objects.get(username="alice"))
    assert client.post(reverse("logout"), headers={"HX-Request": "true"}).status_code == 403
    page = client.get(reverse("login")).content.decode()
    token = page.split('"X-CSRFToken": "', 1)[1].split('"', 1)[0]
    response = client.post(reverse("logout"), headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 302


def test_a_session_cookie_replayed_after_logout_is_worthless(client, settings):
    from django.contrib.auth.models import Group
    from django.test import Client

    get_user_model().objects.get(username="alice").groups.add(Group.objects.get_or_create(name="admin")[0])
    assert logged_in(login(client, "alice", PASSWORD))
    stolen = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert client.get("/health/").status_code == 200
    client.post(reverse("logout"))

    replay = Client()
    replay.cookies[settings.SESSION_COOKIE_NAME] = stolen
    response = replay.get("/health/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)"]
)
def test_the_login_never_redirects_off_site(client, target):
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD, "next": target})
    assert response.status_code == 302 and response["Location"] == "/start/"


def test_the_login_follows_a_local_next(client):
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD, "next": "/events/?error=any"})
    assert response["Location"] == "/events/?error=any"


@pytest.mark.parametrize(
    ("roles", "landing"),
    [(("analyst",), "/"), (("finance",), "/costs/"), (("admin",), "/"), (("analyst", "finance"), "/")],
)
def test_a_login_lands_on_the_first_page_the_users_roles_open(client, roles, landing):
    make_user("landing", *roles, password="a-long-pass-phrase")
    response = client.post(reverse("login"), {"username": "landing", "password": "a-long-pass-phrase"}, follow=True)
    assert response.redirect_chain[-1][0] == landing
    assert response.status_code == 200


def test_a_user_without_a_role_lands_on_a_403_after_login(client):
    get_user_model().objects.create_user("nobody", password="a-long-pass-phrase")
    response = client.post(reverse("login"), {"username": "nobody", "password": "a-long-pass-phrase"}, follow=True)
    assert response.status_code == 403
