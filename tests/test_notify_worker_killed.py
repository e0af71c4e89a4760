"""A delivery worker SIGKILLed in the middle of an attempt: its lease holds the notification off
from other workers until it expires, then the next pass delivers it, with the same delivery id."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from .notify_support import Receiver, make_alert

ROOT = Path(__file__).resolve().parent.parent
SECRET = "kill-test-secret"
TIMEOUT, LEASE = 4, 9


@pytest.fixture
def database(tmp_path):
    """A database the test's processes share, migrated by a subprocess like a deployment."""
    url = os.getenv("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        import psycopg

        parsed = urlparse(url)
        name = f"{parsed.path.lstrip('/') or 'kmsdash'}_killed"
        admin = parsed._replace(path="/postgres").geturl()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        yield parsed._replace(path=f"/{name}").geturl()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        yield f"sqlite:///{tmp_path / 'killed.sqlite3'}"


def query(url: str, sql: str) -> list[tuple]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True, timeout=180)
    return done.stdout


def test_a_worker_killed_mid_delivery_leaves_it_to_the_next_pass_after_its_lease(database, tmp_path):
    env = {**os.environ, "DATABASE_URL": database, "CELERY_BROKER_URL": "memory://", "HOOK_SECRET": SECRET,
           "KMSDASH_VAR_DIR": str(tmp_path / "var"), "KMSDASH_ALERT_DELIVERY_TIMEOUT": str(TIMEOUT),
           "KMSDASH_ALERT_DELIVERY_LEASE_SECONDS": str(LEASE)}
    manage(env, "migrate", "--no-input")
    with Receiver(plan=["stall"]) as receiver:
        manage(env, "add_alert_channel", "hook", "--webhook", receiver.url, "--secret-env", "HOOK_SECRET")
        alert = json.dumps(make_alert())
        manage(env, "shell", "-c", "import json; from notify.services import notify_alert; "
               f"notify_alert(json.loads({alert!r}), event='opened')")

        worker = subprocess.Popen([sys.executable, "manage.py", "deliver_alerts"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert receiver.arrived.wait(60), "the worker never reached the receiver"
        claimed_at = time.monotonic()
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        receiver.release.set()

        # The killed attempt is in the ledger without an outcome; the notification waits.
        assert query(database, "SELECT number, ok FROM notify_deliveryattempt") == [(1, None)]
        assert query(database, "SELECT state, attempts FROM notify_notification") == [("pending", 1)]

        # Restarted at once, a worker leaves it alone: the dead worker's lease still holds.
        assert manage(env, "deliver_alerts", "--now").startswith("0 due")

        time.sleep(max(0.0, claimed_at + LEASE + 0.5 - time.monotonic()))
        assert manage(env, "deliver_alerts").startswith("1 due: 1 delivered")

    assert query(database, "SELECT state, attempts FROM notify_notification") == [("delivered", 2)]
    assert sorted(query(database, "SELECT number, ok FROM notify_deliveryattempt")) == [(1, None), (2, True)]
    (delivery,) = query(database, "SELECT id FROM notify_notification")[0]
    assert len(receiver.requests) == 2
    for request in receiver.requests:
        assert request["headers"]["X-Kmsdash-Delivery"].replace("-", "") == str(delivery).replace("-", "")
        expected = "sha256=" + hmac.new(SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
        assert request["headers"]["X-Kmsdash-Signature"] == expected
