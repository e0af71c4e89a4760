"""Plain helpers every area's tests use: the emulator's handle, users, `manage.py` in a process of its
own, and Celery workers.

Fixtures live in conftest.py files (this folder's for the whole suite, each area's for its own);
functions one area needs live in that area's support.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from html import unescape
from pathlib import Path

import plotly.graph_objects as go
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from kmsdash.roles import ADMIN

ROOT = Path(__file__).resolve().parent.parent
# Every user make_user makes has this password (the browser and login-form tests type it).
PASSWORD = "matrix-password-not-secret"


class Emulator:
    """Handle on the AWS emulator that the test's boto3 clients reach over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url

    def control(self, path: str, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}/_kmsdash/{path}", data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def fault(
        self, target: str, error: str = "ThrottlingException", *, status: int = 400, count: int = 1, delay: float = 0.0
    ) -> None:
        self.control("faults", {"target": target, "error": error, "status": status, "count": count, "delay": delay})

    def requests(self, target: str | None = None) -> list[dict]:
        seen = self.control("requests")
        return [r for r in seen if target is None or r["target"].endswith(target)]

    def reset(self) -> None:
        self.control("reset", {})


def make_user(username: str, *roles: str, permission: str | None = None, password: str = PASSWORD):
    """A user with `roles`, made as an operator's `create_user` makes one: admins are staff and superuser.

    The role groups are fetched with get_or_create: a transactional test run before on the same worker
    flushes the groups the migration made. `permission` ("app_label.codename") is granted on top.
    """
    user = get_user_model().objects.create_user(username, password=password)
    user.is_staff = user.is_superuser = ADMIN in roles
    user.save(update_fields=["is_staff", "is_superuser"])
    user.groups.add(*(Group.objects.get_or_create(name=role)[0] for role in roles))
    if permission:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def manage_py(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`manage.py <args>` in a process of its own, as production starts it: none of this test run's
    settings (the browser tests, for one, set DJANGO_ALLOW_ASYNC_UNSAFE for the whole session), `env` on top."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("KMSDASH_", "DJANGO_"))}
    environment.update(DJANGO_SETTINGS_MODULE="kmsdash.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- real Celery workers (the end-to-end tests) -----------------------------------------------------


def worker_number(worker_id: str) -> int:
    """0 for a serial run ("master") or pytest-xdist's first worker ("gw0"), 1 for "gw1", ..."""
    return int(worker_id[2:]) if worker_id.startswith("gw") else 0


def start_worker(env: dict[str, str], name: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "kmsdash",
            "worker",
            "--pool=prefork",
            "-c",
            "1",
            "-n",
            name,
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    pool = children(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid in pool:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# How every page embeds a chart (audits.charts.figure, drawn by static/kmsdash/app.js).
FIGURE = re.compile(r'id="([^"]+)" data-figure-json="([^"]*)"')


def embedded_figures(html: str) -> dict[str, go.Figure]:
    """The page's figures by chart id, each rebuilt (and so validated) by plotly.py."""
    found = {}
    for chart_id, attribute in FIGURE.findall(html):
        assert "<" not in attribute and ">" not in attribute, chart_id  # data, never markup
        found[chart_id] = go.Figure(json.loads(unescape(attribute)))
    return found


def trace_names(fig: go.Figure) -> list[str]:
    return [trace.name for trace in fig.data]


def query(url: str, sql: str) -> list[tuple]:
    """Rows of `sql` in a database other processes share (a worker's, outside the test's transaction)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()
