"""Sessions end after KMSDASH_SESSION_IDLE_MINUTES without activity and KMSDASH_SESSION_MAX_HOURS after login."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from tests.kmsdash.support import sent_to_login
from tests.support import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-pass-phrase-for-sessions"
PAGE = "/events/?period=7d"
BACKGROUND = {"HX-Request": "true", "X-Kmsdash-Background": "1", "HX-Current-URL": "http://testserver/health/"}


@pytest.fixture
def clock(settings):
    settings.KMSDASH_SESSION_IDLE_MINUTES = 60
    settings.KMSDASH_SESSION_MAX_HOURS = 8
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


@pytest.fixture
def signed_in(client):
    make_user("ann", "admin", password=PASSWORD)
    response = client.post("/accounts/login/", {"username": "ann", "password": PASSWORD})
    assert response.status_code == 302
    return client


def minutes(traveller, n: float) -> None:
    traveller.shift(timedelta(minutes=n))


def test_an_idle_session_ends_and_the_login_page_says_why(clock, signed_in):
    assert signed_in.get(PAGE).status_code == 200
    minutes(clock, 61)
    response = signed_in.get(PAGE)
    assert sent_to_login(response, htmx=False) == PAGE
    assert "_auth_user_id" not in signed_in.session
    page = signed_in.get(response["Location"]).content.decode()
    assert "Your session ended after 60 minutes without activity." in page
    assert "without activity" not in signed_in.get("/accounts/login/").content.decode()  # said once


def test_an_idle_htmx_request_navigates_the_page_to_the_login_form(clock, signed_in):
    minutes(clock, 61)
    response = signed_in.get(
        "/events/1/raw/", headers={"HX-Request": "true", "HX-Current-URL": f"http://testserver{PAGE}"}
    )
    assert sent_to_login(response, htmx=True) == PAGE


def test_activity_keeps_a_session_alive(clock, signed_in):
    for _ in range(8):
        minutes(clock, 50)
        assert signed_in.get(PAGE).status_code == 200


def test_a_page_polling_by_itself_does_not_keep_the_session_alive(clock, signed_in):
    assert signed_in.get("/health/").status_code == 200
    for _ in range(5):
        minutes(clock, 10)
        assert signed_in.get("/health/", headers=BACKGROUND).status_code == 200
    minutes(clock, 11)
    # 61 minutes after the last thing the person did: the poll takes the whole page to the login form.
    assert sent_to_login(signed_in.get("/health/", headers=BACKGROUND), htmx=True) == "/health/"


def test_the_health_panel_marks_its_poll_as_background(clock, signed_in):
    page = signed_in.get("/health/").content.decode()
    assert 'hx-trigger="every 60s"' in page
    assert 'hx-headers=\'{"X-Kmsdash-Background": "1"}\'' in page


def test_even_an_active_session_ends_at_the_maximum_age(clock, signed_in):
    for _ in range(15):
        minutes(clock, 30)
        assert signed_in.get(PAGE).status_code == 200
    minutes(clock, 31)  # 8 h 1 min after the login
    response = signed_in.get(PAGE)
    assert sent_to_login(response, htmx=False) == PAGE
    assert "Your session ended 8 hours after you signed in." in signed_in.get(response["Location"]).content.decode()


def test_an_idle_limit_of_zero_turns_it_off(clock, settings, signed_in):
    settings.KMSDASH_SESSION_IDLE_MINUTES = 0
    minutes(clock, 7 * 60)
    assert signed_in.get(PAGE).status_code == 200
