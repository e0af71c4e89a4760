"""TOTP two-factor authentication (django-otp), with codes computed from the device key as an app would."""

from __future__ import annotations

import hmac
import re
import struct
import time
from base64 import b32decode
from hashlib import sha1

import pytest
import time_machine
from django.test import Client

from tests.support import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-pass-phrase-for-2fa"
NOW = 1_800_000_000.0  # a fixed clock, 10 s into a 30 s TOTP step


def totp(key_b32: str, at: float) -> str:
    """RFC 6238 (SHA-1, 30 s, 6 digits), written out here rather than borrowed from django-otp."""
    digest = hmac.new(b32decode(key_b32), struct.pack(">Q", int(at) // 30), sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def log_in(client: Client, username: str):
    return client.post("/accounts/login/", {"username": username, "password": PASSWORD})


def enrol(client: Client) -> str:
    """Enrol from the setup page as a person would: read the key it shows, answer with a code."""
    page = client.get("/accounts/2fa/")
    assert page.status_code == 200
    shown = re.search(r"<code>([A-Z2-7]+)</code>", page.content.decode())
    assert shown is not None, "the setup page shows the key"
    key = shown.group(1)
    response = client.post("/accounts/2fa/", {"code": totp(key, time.time())})
    assert response.status_code == 302
    return key


def test_enrolment_shows_a_qr_code_as_an_svg_image_and_confirms_with_a_code(client, clock):
    make_user("ann", "analyst", password=PASSWORD)
    log_in(client, "ann")
    page = client.get("/accounts/2fa/")
    html = page.content.decode()
    assert '<img class="qr" src="/accounts/2fa/qr.svg"' in html
    assert "'unsafe-inline'" not in page["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    svg = client.get("/accounts/2fa/qr.svg")
    assert svg["Content-Type"] == "image/svg+xml"
    assert svg.content.startswith(b"<?xml") and b"<svg" in svg.content
    assert b"<script" not in svg.content and b"style" not in svg.content
    assert "no-store" in svg["Cache-Control"]
    key = re.search(r"<code>([A-Z2-7]+)</code>", html).group(1)
    wrong = client.post("/accounts/2fa/", {"code": f"{(int(totp(key, NOW)) + 1) % 1_000_000:06d}"})
    assert wrong.status_code == 200 and b"That code is not right" in wrong.content
    clock.shift(2)  # past django-otp's throttle after one wrong code (1 s), within the same step
    assert client.post("/accounts/2fa/", {"code": totp(key, NOW)}).status_code == 302
    assert b"Two-factor authentication is <strong>on</strong>" in client.get("/accounts/2fa/").content
    assert client.get("/accounts/2fa/qr.svg").status_code == 404  # the key is never shown again


def test_after_the_password_a_user_with_a_device_must_give_a_code(clock):
    make_user("ann", "analyst", password=PASSWORD)
    first = Client()
    log_in(first, "ann")
    key = enrol(first)
    clock.shift(30)

    browser = Client()
    assert log_in(browser, "ann")["Location"] == "/start/"
    response = browser.get("/events/?period=7d")
    assert (
        response.status_code == 302 and response["Location"] == "/accounts/2fa/verify/?next=%2Fevents%2F%3Fperiod%3D7d"
    )
    htmx = browser.get("/events/1/raw/", headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/events/"})
    assert htmx.status_code == 200 and htmx["HX-Redirect"] == "/accounts/2fa/verify/?next=%2Fevents%2F"
    assert browser.get("/accounts/2fa/verify/?next=/events/").status_code == 200

    before = browser.session.session_key
    wrong = browser.post(
        "/accounts/2fa/verify/", {"code": "000000" if totp(key, time.time()) != "000000" else "111111"}
    )
    assert wrong.status_code == 200 and b"That code is not right" in wrong.content
    clock.shift(3)  # django-otp's throttle: one second after the first wrong code, doubling after each
    response = browser.post("/accounts/2fa/verify/", {"code": totp(key, time.time()), "next": "/events/"})
    assert response.status_code == 302 and response["Location"] == "/events/"
    assert browser.session.session_key != before  # a new privilege level, a new session key
    assert browser.get("/events/").status_code == 200

    # The same code cannot sign a second session in.
    thief = Client()
    log_in(thief, "ann")
    replay = thief.post("/accounts/2fa/verify/", {"code": totp(key, time.time())})
    assert replay.status_code == 200
    assert thief.get("/events/").status_code == 302


def test_wrong_codes_are_throttled_so_codes_cannot_be_guessed(clock):
    make_user("ann", "analyst", password=PASSWORD)
    browser = Client()
    log_in(browser, "ann")
    key = enrol(browser)
    clock.shift(30)
    browser = Client()
    log_in(browser, "ann")
    right = totp(key, time.time())
    wrong = "000000" if right != "000000" else "111111"
    for _ in range(5):
        browser.post("/accounts/2fa/verify/", {"code": wrong})
    refused = browser.post("/accounts/2fa/verify/", {"code": right})
    assert b"Too many wrong codes" in refused.content
    assert browser.get("/events/").status_code == 302


def test_with_require_2fa_an_admin_must_enrol_before_anything_else(client, settings, clock):
    settings.KMSDASH_REQUIRE_2FA = True
    make_user("root", "admin", password=PASSWORD)
    log_in(client, "root")
    for page in ("/", "/health/", "/admin/"):
        response = client.get(page)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/2fa/?next="), page
    enrol(client)
    assert client.get("/health/").status_code == 200
    assert client.get("/admin/").status_code == 200


def test_without_require_2fa_or_for_other_roles_a_device_is_optional(client, settings):
    settings.KMSDASH_REQUIRE_2FA = True
    make_user("ann", "analyst", password=PASSWORD)
    log_in(client, "ann")
    assert client.get("/").status_code == 200
    settings.KMSDASH_REQUIRE_2FA = False
    make_user("root", "admin", password=PASSWORD)
    admin = Client()
    log_in(admin, "root")
    assert admin.get("/health/").status_code == 200


def test_single_sign_on_users_are_not_asked_for_a_local_second_factor(client, settings):
    settings.KMSDASH_REQUIRE_2FA = True
    user = make_user("sso-admin", "admin", password=PASSWORD)
    user.set_unusable_password()
    user.save()
    client.force_login(user)
    assert client.get("/health/").status_code == 200
    assert client.get("/accounts/2fa/").status_code == 404


def test_a_device_is_removed_only_with_a_current_code(client, clock):
    make_user("ann", "analyst", password=PASSWORD)
    log_in(client, "ann")
    key = enrol(client)
    clock.shift(30)
    assert client.post("/accounts/2fa/", {"code": "12345"}).status_code == 200
    assert b"is <strong>on</strong>" in client.get("/accounts/2fa/").content
    clock.shift(2)  # past the throttle of the wrong code
    assert client.post("/accounts/2fa/", {"code": totp(key, time.time())}).status_code == 302
    browser = Client()
    log_in(browser, "ann")
    assert browser.get("/").status_code == 200  # no second step any more
