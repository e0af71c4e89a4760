"""A per-username limit on password guessing, from any address, that never locks the real user out.

django-axes locks a (username, address) pair, so an attacker with many addresses guesses without
limit. Here every password attempt on a username counts, from anywhere: the first
KMSDASH_LOGIN_USERNAME_FREE_FAILURES are free, then each one must wait twice as long after the one
before it (1 s, 2 s, 4 s ...), never more than KMSDASH_LOGIN_USERNAME_MAX_DELAY_SECONDS; attempts
made while waiting are refused unchecked and do not count, so hammering does not lengthen the wait.
A login resets the count; a day without attempts forgets it.

An attacker could still keep every slot taken. So a browser that has signed in as the user before
carries a signed cookie naming the user (OWASP's "device cookie"), and its attempts for that user
skip this limit: the real user signs in from a known browser whatever the attack. The per-pair lock
of axes still applies to it.

It is an authentication backend placed before axes: it refuses (PermissionDenied stops Django's
authenticate()) or lets the next backend decide, so the login page and the admin's are covered alike.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from .models import LoginThrottle

KNOWN_BROWSER_COOKIE = "kmsdash_known"
KNOWN_BROWSER_SALT = "kmsdash.throttle.known-browser"
FORGET_AFTER = timedelta(days=1)


def delay_after(attempts: int) -> timedelta:
    """How long the next attempt waits after `attempts` counted ones."""
    free = settings.KMSDASH_LOGIN_USERNAME_FREE_FAILURES
    if attempts < free:
        return timedelta(0)
    # Capped exponent: 2 ** 20 s is already far above any sensible ceiling.
    seconds = min(2 ** min(attempts - free, 20), settings.KMSDASH_LOGIN_USERNAME_MAX_DELAY_SECONDS)
    return timedelta(seconds=seconds)


def known_browser(request: HttpRequest | None, username: str) -> bool:
    if request is None:
        return False
    max_age = settings.KMSDASH_KNOWN_BROWSER_DAYS * 86400
    known = request.get_signed_cookie(KNOWN_BROWSER_COOKIE, default=None, salt=KNOWN_BROWSER_SALT, max_age=max_age)
    return known is not None and known == username


def remember_browser(response: HttpResponse, username: str) -> None:
    response.set_signed_cookie(
        KNOWN_BROWSER_COOKIE,
        username,
        salt=KNOWN_BROWSER_SALT,
        max_age=settings.KMSDASH_KNOWN_BROWSER_DAYS * 86400,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )


def wait_for(username: str) -> timedelta:
    """How long an attempt on `username` (from an unknown browser) must still wait; 0 if it may go."""
    row = LoginThrottle.objects.filter(username=username[:150]).first()
    if row is None:
        return timedelta(0)
    return max(row.next_attempt_at - timezone.now(), timedelta(0))


def admit(username: str) -> bool:
    """Count one attempt on `username` and say whether it may be checked now.

    Counted before the password is checked, under a row lock, so parallel guesses queue for their
    slots instead of all slipping through while the first one is being hashed."""
    now = timezone.now()
    with transaction.atomic():
        row, _ = LoginThrottle.objects.select_for_update().get_or_create(
            username=username[:150], defaults={"last_attempt_at": now, "next_attempt_at": now}
        )
        if now - row.last_attempt_at > FORGET_AFTER:
            row.attempts = 0
        elif now < row.next_attempt_at:
            return False
        row.attempts += 1
        row.last_attempt_at = now
        row.next_attempt_at = now + delay_after(row.attempts)
        row.save()
    return True


def forget(username: str) -> None:
    LoginThrottle.objects.filter(username=username[:150]).delete()


class UsernameThrottleBackend:
    """Never authenticates anyone: refuses an attempt on a username that must wait, else passes.

    No get_user(): it never holds a session (and Client.force_login picks the first backend that has one)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None or password is None or known_browser(request, username):
            return None
        if not admit(username):
            if request is not None:
                request.kmsdash_login_wait = wait_for(username)  # shown by the login page
            raise PermissionDenied
        return None
