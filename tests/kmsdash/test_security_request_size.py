"""No header value longer than one header field reaches a header parser, however many fields carry it.

gunicorn caps each field (gunicorn.conf.py) but joins repeated fields; kmsdash.middleware's
HeaderSizeMiddleware refuses the joined value. Through the real gunicorn: tests/kmsdash/test_serving.py.
"""

from __future__ import annotations

import time

import pytest

from kmsdash.middleware import MAX_HEADER_BYTES

pytestmark = pytest.mark.django_db


def cookie_of(length: int) -> str:
    return 'c="' + "\\" * (length - 4) + '"'


def test_a_cookie_as_long_as_one_header_field_may_be_still_reaches_the_page(client):
    cookie = cookie_of(MAX_HEADER_BYTES)
    assert len(cookie) == MAX_HEADER_BYTES
    response = client.get("/accounts/login/", HTTP_COOKIE=cookie)
    assert response.status_code == 200 and b"<form" in response.content


def test_repeated_cookie_fields_joined_into_one_long_value_are_refused_with_431_unparsed(client):
    # What gunicorn hands over for 30 Cookie fields of 8 KB: one value, joined with commas.
    joined = ",".join(cookie_of(8000) for _ in range(30))
    started = time.monotonic()
    response = client.get("/accounts/login/", HTTP_COOKIE=joined)
    assert response.status_code == 431
    assert b"<form" not in response.content and "csrftoken" not in response.cookies
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("header", ["HTTP_COOKIE", "HTTP_ACCEPT_LANGUAGE", "HTTP_X_ANYTHING"])
def test_any_header_one_byte_longer_than_a_field_may_be_is_refused(client, header):
    response = client.get("/accounts/login/", **{header: "a" * (MAX_HEADER_BYTES + 1)})
    assert response.status_code == 431
