"""Sign-in rules that apply to every request: session lifetime, the second factor, known browsers.

SignInMiddleware sits after AuthenticationMiddleware and django-otp's OTPMiddleware, and before
HtmxLoginRequiredMiddleware:

- A session ends KMSDASH_SESSION_IDLE_MINUTES after the person's last request, and in any case
  KMSDASH_SESSION_MAX_HOURS after its login. The user is logged out before the login check runs,
  so the request is answered like any anonymous one: a 302 to the login page, or for htmx a 200 with
  HX-Redirect (a full navigation, never the login form inside a fragment). Requests that a page
  makes by itself (the health panel's poll, marked with the X-Kmsdash-Background header) do not
  count as activity, so a page left open still times out.
- A user with a confirmed TOTP device must pass the second step (kmsdash/twofactor.py) before any
  other page; with KMSDASH_REQUIRE_2FA an admin with a password and no device must enrol first.
- After a login, the browser gets the signed cookie that exempts it from the per-username backoff
  (kmsdash/throttle.py).
"""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails
from django_otp import user_has_device

from . import throttle
from .middleware import page_path
from .roles import ADMIN, user_roles

LOGIN_AT = "kmsdash_login_at"
SEEN_AT = "kmsdash_seen_at"
ENDED = "kmsdash_session_ended"
# Activity is written to the session at most this often: not a database write per request.
SEEN_RESOLUTION_SECONDS = 60
BACKGROUND_HEADER = "X-Kmsdash-Background"
# Views an unverified user may open: the second step itself, and the way out.
UNVERIFIED_OK = {"twofactor_verify", "twofactor_setup", "twofactor_qr", "logout", "login", "healthz", "metrics"}


@receiver(user_logged_in)
def _start_session_clock(sender, request, user, **kwargs) -> None:
    if request is None or not hasattr(request, "session"):
        return
    now = time.time()
    request.session[LOGIN_AT] = request.session[SEEN_AT] = now
    throttle.forget(user.get_username())
    # Only a password login makes this a known browser (the backoff guards passwords).
    if user.has_usable_password():
        request.kmsdash_remember_browser = user.get_username()


def session_end_reason(request: HttpRequest, now: float) -> str:
    session = request.session
    login_at, seen_at = session.get(LOGIN_AT), session.get(SEEN_AT)
    if login_at is None or seen_at is None:
        # A session from before these rules: its clock starts now.
        session[LOGIN_AT] = session[SEEN_AT] = now
        return ""
    if now - login_at > settings.KMSDASH_SESSION_MAX_HOURS * 3600:
        return f"Your session ended {settings.KMSDASH_SESSION_MAX_HOURS} hours after you signed in."
    idle = settings.KMSDASH_SESSION_IDLE_MINUTES
    if idle and now - seen_at > idle * 60:
        return f"Your session ended after {idle} minutes without activity."
    if not request.headers.get(BACKGROUND_HEADER) and now - seen_at >= SEEN_RESOLUTION_SECONDS:
        session[SEEN_AT] = now
    return ""


def needs_second_factor(user) -> str:
    """'verify' for a user who must give a code now, 'enrol' for one who must set a device up, or ''."""
    if not user.is_authenticated or user.is_verified():
        return ""
    if user_has_device(user):
        return "verify"
    if settings.KMSDASH_REQUIRE_2FA and user.has_usable_password() and (ADMIN in user_roles(user) or user.is_staff):
        return "enrol"
    return ""


def redirect_to(request: HttpRequest, url: str) -> HttpResponse:
    htmx = HtmxDetails(request)
    target = f"{url}?{urlencode({'next': page_path(request, htmx) if htmx else request.get_full_path()})}"
    return HttpResponseClientRedirect(target) if htmx else redirect(target)


class SignInMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated and (reason := session_end_reason(request, time.time())):
            logout(request)
            request.session[ENDED] = reason  # shown once by the login page
        response = self.get_response(request)
        if username := getattr(request, "kmsdash_remember_browser", None):
            throttle.remember_browser(response, username)
        if getattr(request, "kmsdash_login_wait", None) is not None and response.status_code == 200:
            response.status_code = 429  # the login form again, saying how long to wait
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if match is None or match.view_name in UNVERIFIED_OK:
            return None
        step = needs_second_factor(request.user)
        if step == "verify":
            return redirect_to(request, reverse("twofactor_verify"))
        if step == "enrol":
            return redirect_to(request, reverse("twofactor_setup"))
        return None


class LoginView(auth_views.LoginView):
    """Django's login view, which also says why a session ended, how long a throttled username
    waits, and offers single sign-on when it is enabled."""

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        wait = getattr(self.request, "kmsdash_login_wait", None)
        context.update(
            session_ended=self.request.session.pop(ENDED, ""),
            login_wait_seconds=math.ceil(wait.total_seconds()) if wait is not None else None,
            oidc_enabled=settings.KMSDASH_OIDC_ENABLED,
            oidc_provider_name=settings.KMSDASH_OIDC_PROVIDER_NAME,
            sso_refused=self.request.GET.get("sso") == "refused",
        )
        return context
