"""An htmx request from a logged-out (or expired) session navigates the whole page to the login form.

Without this, htmx follows the 302 inside its XMLHttpRequest and swaps the login form into the
fragment target. The answer is 200 + HX-Redirect, with `next` set to the page the browser shows
(HX-Current-URL), and never to a URL on another origin.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from django.urls import reverse

from tests.kmsdash.support import (
    ADMIN_NAMESPACE,
    BEARER_TOKEN,
    KEY,
    MATRIX,
    PUBLIC,
    SIGN_IN_FLOW,
    SIGNED_IN,
    Route,
    sent_to_login,
    walk,
)
from tests.support import make_user

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
PAGE = "/events/?operation=Decrypt&period=7d"
FRAGMENT = "/events/1/raw/"


def sample(name: str) -> Route:
    """A request for the URL named `name`: the matrix's own, or a GET of the URL for the others."""
    if name in MATRIX:
        entry = MATRIX[name]
        path = entry.path.format(key=KEY, event=1, finding=1, alert=1, principal="arn:aws:iam::111122223333:role/app")
        return Route(path, entry.roles, entry.method, entry.data)
    return Route(reverse(name), frozenset(), "post" if name == "logout" else "get")


# Every URL of the resolver that needs a login. The Django admin has its own login gate (and no
# htmx); /metrics takes a bearer token, never a session (the matrix checks it refuses sessions).
PROTECTED = sorted(
    name
    for namespace, name, _, _ in walk()
    if namespace.split(":")[0] != ADMIN_NAMESPACE and name not in PUBLIC | SIGN_IN_FLOW | BEARER_TOKEN
)


def hx(client, entry: Route, **headers):
    return getattr(client, entry.method)(entry.path, entry.data, headers={**HTMX, **headers})


def test_every_url_but_the_login_page_and_the_admin_is_checked_here():
    assert set(PROTECTED) == set(MATRIX) | SIGNED_IN


@pytest.mark.parametrize("name", PROTECTED)
def test_an_anonymous_htmx_request_is_sent_to_the_login_page_of_the_page_it_came_from(client, name):
    entry = sample(name)
    response = hx(client, entry, **{"HX-Current-URL": f"http://testserver{PAGE}"})
    assert sent_to_login(response, htmx=True) == PAGE


@pytest.mark.parametrize("name", PROTECTED)
def test_without_hx_current_url_next_is_the_requested_url(client, name):
    entry = sample(name)
    assert sent_to_login(hx(client, entry), htmx=True) == entry.path


@pytest.mark.parametrize("name", PROTECTED)
def test_a_plain_anonymous_request_still_gets_the_302(client, name):
    entry = sample(name)
    headers = {"HX-Current-URL": f"http://testserver{PAGE}"}
    response = getattr(client, entry.method)(entry.path, entry.data, headers=headers)
    # Not htmx: the header means nothing, `next` is the URL the browser asked for.
    assert sent_to_login(response, htmx=False) == entry.path


def test_a_fragment_request_sends_the_user_back_to_the_page_not_the_fragment(client):
    response = client.get(FRAGMENT, headers={**HTMX, "HX-Current-URL": f"http://testserver{PAGE}"})
    assert sent_to_login(response, htmx=True) == PAGE
    assert response["HX-Redirect"] == "/accounts/login/?next=/events/%3Foperation%3DDecrypt%26period%3D7d"


@pytest.mark.parametrize(
    "current_url",
    [
        "https://evil.example/phish",
        "http://evil.example/events/",
        "https://testserver/events/",  # same host, other scheme: not this origin
        "http://testserver.evil.example/events/",
        "http://testserver//evil.example/events/",  # same origin, but its path is a host
        "http://testserver///evil.example/events/",
        "http://testserver/\\evil.example/events/",
        "//evil.example/events/",
        "javascript:alert(1)",
        "/events/",  # not a URL htmx sends: it always sends the absolute page URL
    ],
)
def test_a_foreign_or_odd_hx_current_url_is_never_used_as_next(client, current_url):
    response = client.get(FRAGMENT, headers={**HTMX, "HX-Current-URL": current_url})
    assert sent_to_login(response, htmx=True) == FRAGMENT
    assert "evil" not in response["HX-Redirect"] and "javascript" not in response["HX-Redirect"]


def test_an_auto_encoded_hx_current_url_is_decoded(client):
    # htmx sends a non-ASCII page URL through encodeURIComponent and says so in a second header.
    response = client.get(
        FRAGMENT,
        headers={
            **HTMX,
            "HX-Current-URL": quote("http://testserver/events/?q=\u00e9", safe=""),
            "HX-Current-URL-URI-AutoEncoded": "true",
        },
    )
    assert sent_to_login(response, htmx=True) == "/events/?q=\u00e9"


def test_a_signed_in_htmx_request_without_the_role_still_gets_403(client):
    client.force_login(make_user("finance-only", "finance"))
    response = client.get(PAGE, headers={**HTMX, "HX-Current-URL": f"http://testserver{PAGE}"})
    assert response.status_code == 403
    assert not response.has_header("HX-Redirect")


@pytest.mark.parametrize("htmx", [False, True])
def test_the_login_answer_varies_on_hx_request_so_no_cache_mixes_them(client, htmx):
    response = client.get(PAGE, headers=HTMX if htmx else {})
    assert "HX-Request" in response["Vary"]
