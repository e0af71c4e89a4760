"""HTTP methods: HEAD answers wherever GET does (uptime monitors send HEAD), and the pages refuse
methods they have no use for."""

from __future__ import annotations

import pytest

from tests.kmsdash.support import MATRIX, USERS, seed_world
from tests.support import make_user

pytestmark = pytest.mark.django_db

PAGES = sorted(name for name, entry in MATRIX.items() if entry.method == "get")
ACTIONS = sorted(name for name, entry in MATRIX.items() if entry.method == "post")


@pytest.fixture
def world():
    return seed_world()


@pytest.mark.parametrize("user", ["admin", "analyst", "finance", "no-role"])
@pytest.mark.parametrize("name", PAGES)
def test_head_answers_like_get_without_a_body(client, world, name, user):
    roles, permission = USERS[user]
    client.force_login(make_user(user, *roles, permission=permission))
    path = MATRIX[name].path.format(**world)
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code != 405, (name, user)
    assert head.content == b""
    assert head["Content-Type"] == get["Content-Type"]


@pytest.mark.parametrize("name", PAGES)
def test_the_pages_refuse_post_and_put(client, world, name):
    client.force_login(make_user("admin", "admin"))
    path = MATRIX[name].path.format(**world)
    assert client.post(path).status_code == 405, name
    assert client.put(path).status_code == 405, name


@pytest.mark.parametrize("name", ACTIONS)
def test_actions_refuse_head_and_get(client, world, name):
    client.force_login(make_user("admin", "admin"))
    path = MATRIX[name].path.format(**world)
    assert client.head(path).status_code == 405, name
    assert client.get(path).status_code == 405, name


def test_the_health_probe_answers_head_anonymously(client, monkeypatch):
    from kmsdash import healthz

    monkeypatch.setitem(healthz.PROBES, "broker", lambda: None)
    assert client.head("/healthz").status_code == 200
