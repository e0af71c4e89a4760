"""Single sign-on end to end, against a real OpenID Connect provider on 127.0.0.1.

The provider is panva/node-oidc-provider (tests/oidc_provider/, installed by scripts/test.sh with
`npm ci` when node is there). The test plays the browser: kmsdash's login page, its "Sign in with"
button, the provider's own sign-in and consent pages over real HTTP, the redirect back to the
callback, whose code kmsdash exchanges at the provider's token endpoint, checking the ID token
against the provider's published keys and reading the groups from its userinfo endpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from html import unescape
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

PROVIDER_DIR = Path(__file__).parent.parent / "oidc_provider"
CLIENT = {"client_id": "kmsdash", "client_secret": "a-client-secret-for-tests", "redirect_uris": []}
ACCOUNTS = {
    "ada": {"email": "ada@example.test", "groups": ["everyone", "kms-admins"]},
    "fin": {"email": "fin@example.test", "groups": ["kms-finance"]},
    "nobody": {"email": "nobody@example.test", "groups": ["everyone"]},
    "alice": {"email": "alice@example.test", "groups": ["kms-admins"]},
}
ROLE_MAP = {"kms-admins": "admin", "kms-finance": "finance", "kms-analysts": "analyst"}
CALLBACK = "http://testserver/oidc/callback/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def provider():
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the OpenID provider of these tests is node-oidc-provider")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("tests/oidc_provider is not installed: run `npm ci` there (scripts/test.sh does when node exists)")
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "OIDC_CLIENT": json.dumps({**CLIENT, "redirect_uris": [CALLBACK]}),
        "OIDC_ACCOUNTS": json.dumps(ACCOUNTS),
    }
    process = subprocess.Popen(
        ["node", "provider.js"], cwd=PROVIDER_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        line = process.stdout.readline()  # "ready <issuer>" once it listens
        assert line.startswith("ready "), f"the provider did not start: {line!r}"
        issuer = line.split()[1]
        discovery = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
        yield discovery
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def sso(provider, settings):
    """Single sign-on configured as the README says, with the endpoints the provider publishes."""
    settings.KMSDASH_OIDC_ENABLED = True
    settings.KMSDASH_OIDC_PROVIDER_NAME = "Example IdP"
    settings.KMSDASH_OIDC_ROLE_MAP = ROLE_MAP
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = provider["authorization_endpoint"]
    settings.OIDC_OP_TOKEN_ENDPOINT = provider["token_endpoint"]
    settings.OIDC_OP_USER_ENDPOINT = provider["userinfo_endpoint"]
    settings.OIDC_OP_JWKS_ENDPOINT = provider["jwks_uri"]
    settings.OIDC_RP_CLIENT_ID = CLIENT["client_id"]
    settings.OIDC_RP_CLIENT_SECRET = CLIENT["client_secret"]
    settings.OIDC_RP_SIGN_ALGO = "RS256"
    settings.OIDC_RP_SCOPES = "openid email profile groups"
    settings.OIDC_USE_PKCE = True
    settings.OIDC_TIMEOUT = 10
    settings.LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=refused"
    settings.AUTHENTICATION_BACKENDS = [*settings.AUTHENTICATION_BACKENDS, "kmsdash.oidc.RoleMappingOIDCBackend"]
    return provider


def form_of(html: str) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the (only) form of one of the provider's pages."""
    form = re.search(r'<form[^>]*action="([^"]+)"', html)
    assert form is not None, html
    action = unescape(form.group(1))
    fields = {
        unescape(n): unescape(v) for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html)
    }
    return action, fields


def sign_in_at_provider(start: str, login: str) -> str:
    """Play the browser at the provider from its authorization URL; returns the URL it sends back to kmsdash."""
    browser = requests.Session()
    response = browser.get(start, allow_redirects=False, timeout=10)
    for _ in range(10):
        if response.is_redirect:
            target = urljoin(response.url, response.headers["Location"])
            if target.startswith("http://testserver/"):
                return target
            response = browser.get(target, allow_redirects=False, timeout=10)
            continue
        assert response.status_code == 200, (response.status_code, response.text[:500])
        action, fields = form_of(response.text)
        if fields.get("prompt") == "login":
            fields.update(login=login, password="any")
        response = browser.post(urljoin(response.url, action), data=fields, allow_redirects=False, timeout=10)
    raise AssertionError("the provider never sent the browser back")


def sign_in(client: Client, login: str, next_page: str = ""):
    from django.conf import settings

    page = client.get("/accounts/login/" + (f"?next={next_page}" if next_page else "")).content.decode()
    button = re.search(r'<a class="button" href="([^"]+)">Sign in with Example IdP</a>', page)
    assert button, "the login page offers single sign-on"
    start = client.get(unescape(button.group(1)))
    assert start.status_code == 302 and start["Location"].startswith(settings.OIDC_OP_AUTHORIZATION_ENDPOINT + "?")
    back = urlsplit(sign_in_at_provider(start["Location"], login))
    assert back.path == "/oidc/callback/"
    return client.get(back.path, dict(pair.split("=", 1) for pair in back.query.split("&")))


def roles_of(username: str) -> set[str]:
    return set(get_user_model().objects.get(username=username).groups.values_list("name", flat=True))


def test_a_provider_user_in_a_mapped_group_is_signed_in_with_that_role(sso, client):
    response = sign_in(client, "ada")
    assert response.status_code == 302 and response["Location"] == "/start/"
    assert client.get("/health/").status_code == 200  # an admin page
    user = get_user_model().objects.get(username="ada")
    assert roles_of("ada") == {"admin"}  # "everyone" maps to nothing
    assert user.email == "ada@example.test" and user.is_staff
    assert not user.has_usable_password()


def test_the_role_follows_the_groups_and_next_is_kept(sso, client):
    response = sign_in(client, "fin", next_page="/costs/")
    assert response["Location"] == "/costs/"
    assert client.get("/costs/").status_code == 200
    assert client.get("/health/").status_code == 403
    assert roles_of("fin") == {"finance"}


def test_a_role_the_provider_no_longer_grants_is_taken_away_at_the_next_sign_in(sso, client):
    from django.contrib.auth.models import Group

    # fin was in kms-admins at an earlier sign-in; the provider now lists kms-finance only.
    earlier = get_user_model().objects.create_user("fin", is_staff=True, is_superuser=True)
    earlier.set_unusable_password()
    earlier.save()
    earlier.groups.add(Group.objects.get_or_create(name="admin")[0])
    sign_in(client, "fin")
    user = get_user_model().objects.get(username="fin")
    assert roles_of("fin") == {"finance"}
    assert not user.is_staff and not user.is_superuser
    assert client.get("/health/").status_code == 403


def test_a_provider_user_without_a_mapped_group_is_refused(sso, client):
    response = sign_in(client, "nobody")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?sso=refused"
    assert "_auth_user_id" not in client.session
    assert not get_user_model().objects.filter(username="nobody").exists()
    page = client.get(response["Location"]).content.decode()
    assert "holds no group that gives a kmsdash role" in page


def test_a_provider_login_never_takes_over_a_local_account(sso, client):
    get_user_model().objects.create_user("alice", password="alices-own-password")
    response = sign_in(client, "alice")
    assert response["Location"] == "/accounts/login/?sso=refused"
    assert "_auth_user_id" not in client.session
    assert roles_of("alice") == set()


def test_a_replayed_callback_signs_nobody_in(sso, client):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    start = client.get("/oidc/authenticate/")
    back = urlsplit(sign_in_at_provider(start["Location"], "ada"))
    query = dict(pair.split("=", 1) for pair in back.query.split("&"))
    assert client.get(back.path, query)["Location"] == "/start/"
    stranger = Client()
    assert stranger.get(back.path, query)["Location"] == "/accounts/login/?sso=refused"
    assert "_auth_user_id" not in stranger.session


OIDC_ENV = {
    "KMSDASH_OIDC_ENABLED": "True",
    "KMSDASH_OIDC_AUTHORIZATION_ENDPOINT": "https://idp.example/auth",
    "KMSDASH_OIDC_TOKEN_ENDPOINT": "https://idp.example/token",
    "KMSDASH_OIDC_USERINFO_ENDPOINT": "https://idp.example/me",
    "KMSDASH_OIDC_JWKS_ENDPOINT": "https://idp.example/jwks",
    "KMSDASH_OIDC_CLIENT_ID": "kmsdash",
    "KMSDASH_OIDC_ROLE_MAP": '{"kms-admins": "admin"}',
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"KMSDASH_OIDC_TOKEN_ENDPOINT": ""}, "KMSDASH_OIDC_TOKEN_ENDPOINT is required"),
        ({}, "Set KMSDASH_OIDC_CLIENT_SECRET or KMSDASH_OIDC_CLIENT_SECRET_FILE"),
        ({"KMSDASH_OIDC_CLIENT_SECRET": "s", "KMSDASH_OIDC_ROLE_MAP": '{"x": "root"}'}, "maps group names to one of"),
        ({"KMSDASH_OIDC_CLIENT_SECRET": "s", "KMSDASH_OIDC_ROLE_MAP": "admins=admin"}, "must be a JSON object"),
    ],
)
def test_an_incomplete_single_sign_on_configuration_stops_the_start(change, message):
    from tests.support import manage_py

    result = manage_py("check", **{**OIDC_ENV, **change})
    assert result.returncode != 0 and message in result.stderr


def test_the_client_secret_can_come_from_a_file(tmp_path):
    from tests.support import manage_py

    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    code = (
        "from django.conf import settings; print(settings.OIDC_RP_CLIENT_SECRET, settings.AUTHENTICATION_BACKENDS[-1])"
    )
    result = manage_py("shell", "--no-imports", "-c", code, **OIDC_ENV, KMSDASH_OIDC_CLIENT_SECRET_FILE=str(secret))
    assert result.stdout.split() == ["from-a-file", "kmsdash.oidc.RoleMappingOIDCBackend"], result.stderr
