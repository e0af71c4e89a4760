"""Fixtures of the audits tests (their plain helpers are in support.py)."""

from __future__ import annotations

import pytest
import time_machine

from tests.audits.support import NOW
from tests.support import make_user


@pytest.fixture
def pages_now():
    with time_machine.travel(NOW, tick=False):
        yield NOW


@pytest.fixture
def pages_analyst(client):
    client.force_login(make_user("ana", "analyst"))
    return client
