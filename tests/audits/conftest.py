"""Fixtures of the audits tests (their plain helpers are in support.py)."""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pytest
import time_machine

from tests.audits.support import NOW
from tests.support import make_user, worker_number


@pytest.fixture
def pages_now():
    with time_machine.travel(NOW, tick=False):
        yield NOW


@pytest.fixture
def pages_analyst(client):
    client.force_login(make_user("ana", "analyst"))
    return client


@pytest.fixture
def databases(tmp_path, worker_id):
    """Two databases on the configured server for worker processes, the tested run's and the clean (or
    serial) run's to compare it with; SQLite files otherwise."""
    url = os.getenv("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        yield f"sqlite:///{tmp_path / 'drill.sqlite3'}", f"sqlite:///{tmp_path / 'clean.sqlite3'}"
        return
    import psycopg

    parsed = urlparse(url)
    base = f"{parsed.path.lstrip('/') or 'kmsdash'}_drill_{worker_number(worker_id)}"
    names = [f"{base}_faulted", f"{base}_clean"]
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    yield tuple(parsed._replace(path=f"/{name}").geturl() for name in names)
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
