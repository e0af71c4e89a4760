"""Two-factor authentication for local accounts: TOTP devices from django-otp.

Enrol: /accounts/2fa/ makes an unconfirmed device, shows its QR code (an SVG served by its own URL
as an <img>, so the page needs no inline content and the CSP stays strict) and its key as text;
the device is confirmed by a code from it. Sign in: after the password, a user with a confirmed
device gets /accounts/2fa/verify/ until a code is accepted (kmsdash/signin.py keeps every other page
back). django-otp rejects a code used before and throttles wrong ones (each doubles the wait).
"""

from __future__ import annotations

import io
from base64 import b32encode

import django_otp
import qrcode
import qrcode.image.svg
from django import forms
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.utils.cache import add_never_cache_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_otp.middleware import is_verified
from django_otp.plugins.otp_totp.models import TOTPDevice


class CodeForm(forms.Form):
    code = forms.CharField(
        max_length=10,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


def next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def confirmed_device(user) -> TOTPDevice | None:
    return TOTPDevice.objects.devices_for_user(user, confirmed=True).first()


def pending_device(user) -> TOTPDevice | None:
    return TOTPDevice.objects.devices_for_user(user, confirmed=False).first()


def accept(request: HttpRequest, device: TOTPDevice) -> None:
    # A new privilege level, a new session key (as a login does).
    request.session.cycle_key()
    django_otp.login(request, device)


@require_http_methods(["GET", "HEAD", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """The second step of a login: a code from the user's device."""
    device = confirmed_device(request.user)
    if device is None or is_verified(request.user):  # what OTPMiddleware's user.is_verified() calls
        return redirect(next_url(request))
    form = CodeForm(request.POST or None)
    if form.is_valid():
        # Asked first: after a wrong code the device refuses every code (even the right one) for a while.
        allowed, _ = device.verify_is_allowed()
        if device.verify_token(form.cleaned_data["code"].strip()):
            accept(request, device)
            return redirect(next_url(request))
        form.add_error("code", "That code is not right." if allowed else "Too many wrong codes: wait a little.")
    return render(request, "registration/twofactor_verify.html", {"form": form, "next": next_url(request)})


@require_http_methods(["GET", "HEAD", "POST"])
def setup(request: HttpRequest) -> HttpResponse:
    """Enrol a device, or remove the one in use (with a current code)."""
    user = request.user
    assert user.is_authenticated  # HtmxLoginRequiredMiddleware
    if not user.has_usable_password():
        raise Http404("Single sign-on accounts use the identity provider's second factor")
    device = confirmed_device(user)
    if device is not None:
        if not is_verified(user):
            return redirect("twofactor_verify")
        form = CodeForm(request.POST or None)
        if form.is_valid():
            if device.verify_token(form.cleaned_data["code"].strip()):
                device.delete()
                return redirect("twofactor_setup")
            form.add_error("code", "That code is not right.")
        return render(request, "registration/twofactor_setup.html", {"device": device, "form": form})
    pending = pending_device(user) or TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)
    form = CodeForm(request.POST or None)
    if form.is_valid():
        if pending.verify_token(form.cleaned_data["code"].strip()):
            pending.confirmed = True
            pending.save(update_fields=["confirmed"])
            accept(request, pending)
            return redirect(next_url(request))
        form.add_error("code", "That code is not right: check the time on your device and try the next one.")
    context = {"pending": pending, "key": b32encode(pending.bin_key).decode(), "form": form, "next": next_url(request)}
    return render(request, "registration/twofactor_setup.html", context)


@require_http_methods(["GET", "HEAD"])
def qr(request: HttpRequest) -> HttpResponse:
    """The QR code of the device being enrolled, as SVG (paths only: no script, no style)."""
    pending = pending_device(request.user)
    if pending is None:
        raise Http404("No device is being enrolled")
    out = io.BytesIO()
    qrcode.make(pending.config_url, image_factory=qrcode.image.svg.SvgPathImage, border=2).save(out)
    response = HttpResponse(out.getvalue(), content_type="image/svg+xml")
    add_never_cache_headers(response)
    return response
