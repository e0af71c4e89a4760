"""No copy of a signed-in page in any cache: `Cache-Control: private, no-store` on every answer to a
signed-in user, over the whole role matrix (pages, fragments, exports, refusals)."""

from __future__ import annotations

import pytest

from tests.kmsdash.support import MATRIX, USERS, seed_world
from tests.support import make_user

pytestmark = pytest.mark.django_db

SIGNED_IN_USERS = [user for user in USERS if user != "anonymous"]


def directives(response) -> set[str]:
    return {part.strip().split("=")[0] for part in response.get("Cache-Control", "").split(",") if part.strip()}


@pytest.fixture
def world():
    return seed_world()


@pytest.mark.parametrize("user", SIGNED_IN_USERS)
@pytest.mark.parametrize("name", sorted(MATRIX))
def test_every_answer_to_a_signed_in_user_is_private_and_not_stored(client, world, name, user):
    roles, permission = USERS[user]
    client.force_login(make_user(user, *roles, permission=permission))
    entry = MATRIX[name]
    for headers in ({}, {"HX-Request": "true"}):
        response = getattr(client, entry.method)(entry.path.format(**world), entry.data, headers=headers)
        assert {"private", "no-store"} <= directives(response), (name, user, response.status_code)
        assert "public" not in directives(response)
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)


@pytest.mark.parametrize("path", ["/start/", "/no/such/page/", "/admin/"])
def test_other_signed_in_answers_too(client, path):
    client.force_login(make_user("someone", "analyst"))
    assert {"private", "no-store"} <= directives(client.get(path))
