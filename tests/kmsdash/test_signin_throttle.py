"""The per-username backoff: guessing from many addresses slows down, the real user is never locked out."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kmsdash.models import LoginThrottle
from kmsdash.throttle import KNOWN_BROWSER_COOKIE

pytestmark = pytest.mark.django_db

PASSWORD = "the-right-password-7"


@pytest.fixture(autouse=True)
def users(settings):
    settings.KMSDASH_LOGIN_USERNAME_FREE_FAILURES = 10
    settings.KMSDASH_LOGIN_USERNAME_MAX_DELAY_SECONDS = 900
    for name in ("alice", "bob"):
        get_user_model().objects.create_user(name, password=PASSWORD)


def attempt(username: str, password: str, address: str, client: Client | None = None, path: str = "/accounts/login/"):
    """One login from `address`, by default from a fresh browser (no cookies)."""
    client = client or Client()
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/start/"


def guess(username: str, times: int, start: int = 0) -> None:
    """Wrong passwords, each from another address, so the per-address lock of axes never trips."""
    for n in range(start, start + times):
        assert not logged_in(attempt(username, "wrong", f"203.0.{n // 250}.{n % 250 + 1}"))


def test_guessing_from_many_addresses_is_held_back_after_the_free_failures(settings):
    guess("alice", settings.KMSDASH_LOGIN_USERNAME_FREE_FAILURES)
    # Even the right password, from an address never seen, waits now: it is not even checked.
    response = attempt("alice", PASSWORD, "198.51.100.99")
    assert response.status_code == 429
    assert b"Too many failed logins for this username: try again in 1 second" in response.content
    assert "_auth_user_id" not in Client().session
    # Other usernames are not affected.
    assert logged_in(attempt("bob", PASSWORD, "198.51.100.99"))


def test_each_wait_doubles_up_to_the_ceiling(settings):
    settings.KMSDASH_LOGIN_USERNAME_MAX_DELAY_SECONDS = 5
    with time_machine.travel(timezone.now(), tick=False) as clock:
        guess("alice", settings.KMSDASH_LOGIN_USERNAME_FREE_FAILURES)
        waits, addresses = [], (f"198.51.{n // 250}.{n % 250 + 1}" for n in range(1000))
        for _ in range(6):
            wait = 0
            while attempt("alice", "wrong", next(addresses)).status_code == 429:
                wait += 1
                clock.shift(timedelta(seconds=1))
            waits.append(wait)
    # The first attempt after the free ones waits 1 s, the next 2 s, then 4 s, then the ceiling.
    assert waits == [1, 2, 4, 5, 5, 5]


def test_attempts_refused_while_waiting_do_not_lengthen_the_wait(settings):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        guess("alice", settings.KMSDASH_LOGIN_USERNAME_FREE_FAILURES + 3)  # the last ones were refused
        attempts = LoginThrottle.objects.get(username="alice").attempts
        for n in range(50):
            assert attempt("alice", "wrong", f"198.51.100.{n + 1}").status_code == 429
        assert LoginThrottle.objects.get(username="alice").attempts == attempts
        clock.shift(timedelta(seconds=2))
        assert logged_in(attempt("alice", PASSWORD, "198.51.100.200"))


def test_a_browser_that_signed_in_before_is_never_held_back(settings):
    browser = Client()
    assert logged_in(attempt("alice", PASSWORD, "198.51.100.7", client=browser))
    assert browser.cookies[KNOWN_BROWSER_COOKIE]["httponly"]
    browser.post(reverse("logout"))
    guess("alice", settings.KMSDASH_LOGIN_USERNAME_FREE_FAILURES + 20)
    assert attempt("alice", PASSWORD, "198.51.100.8").status_code == 429  # an unknown browser waits
    # The user's own browser signs in at once, however long the attack goes on.
    assert logged_in(attempt("alice", PASSWORD, "198.51.100.7", client=browser))


def test_the_known_browser_cookie_names_one_user_and_cannot_be_forged(settings):
    bobs = Client()
    assert logged_in(attempt("bob", PASSWORD, "198.51.100.7", client=bobs))
    bobs.post(reverse("logout"))
    guess("alice", settings.KMSDASH_LOGIN_USERNAME_FREE_FAILURES)
    assert attempt("alice", PASSWORD, "198.51.100.7", client=bobs).status_code == 429
    forged = Client()
    forged.cookies[KNOWN_BROWSER_COOKIE] = "alice"
    assert attempt("alice", PASSWORD, "198.51.100.9", client=forged).status_code == 429


def test_a_login_resets_the_count_and_a_quiet_day_forgets_it(settings):
    free = settings.KMSDASH_LOGIN_USERNAME_FREE_FAILURES
    guess("alice", free - 1)
    assert logged_in(attempt("alice", PASSWORD, "198.51.100.1"))
    assert not LoginThrottle.objects.filter(username="alice").exists()
    with time_machine.travel(timezone.now(), tick=False) as clock:
        guess("alice", free + 5)
        clock.shift(timedelta(hours=24, seconds=1))
        guess("alice", free - 1, start=100)  # counted from zero again: free, not refused
        assert LoginThrottle.objects.get(username="alice").attempts == free - 1


def test_the_admin_login_page_is_held_back_the_same_way(settings):
    guess("alice", settings.KMSDASH_LOGIN_USERNAME_FREE_FAILURES)
    user = get_user_model().objects.get(username="alice")
    user.is_staff = True
    user.save()
    browser = Client()
    response = attempt("alice", PASSWORD, "198.51.100.99", client=browser, path="/admin/login/")
    assert response.status_code == 429
    assert "_auth_user_id" not in browser.session


def test_a_forwarded_login_without_a_trusted_proxy_count_is_logged_once(settings, caplog, monkeypatch):
    from kmsdash import clientip

    monkeypatch.setattr(clientip, "_warned", False)
    with caplog.at_level("WARNING", logger="kmsdash.clientip"):
        for _ in range(3):
            Client().post(
                "/accounts/login/",
                {"username": "alice", "password": "wrong"},
                REMOTE_ADDR="10.0.0.2",
                HTTP_X_FORWARDED_FOR="203.0.113.5",
            )
    warnings = [r for r in caplog.records if "KMSDASH_TRUSTED_PROXY_COUNT is 0" in r.getMessage()]
    assert len(warnings) == 1
