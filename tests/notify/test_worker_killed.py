"""A delivery worker SIGKILLed in the middle of an attempt: its lease holds the notification off
from other workers until it expires, then the next pass delivers it, with the same delivery id."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from celery import Celery

from tests.notify.support import Receiver, make_alert
from tests.support import ROOT, children, query, start_worker, stop, wait_for

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


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=180
    )
    return done.stdout


def environment(database: str, tmp_path: Path, broker: str = "memory://") -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker,
        "HOOK_SECRET": SECRET,
        "KMSDASH_VAR_DIR": str(tmp_path / "var"),
        "KMSDASH_ALERT_DELIVERY_TIMEOUT": str(TIMEOUT),
        "KMSDASH_ALERT_DELIVERY_LEASE_SECONDS": str(LEASE),
        "DJANGO_SETTINGS_MODULE": "kmsdash.settings",
    }


def notify(env: dict[str, str]) -> None:
    alert = json.dumps(make_alert())
    manage(
        env,
        "shell",
        "-c",
        f"import json; from notify.services import notify_alert; notify_alert(json.loads({alert!r}), event='opened')",
    )


def assert_one_delivery_id_and_signed(database: str, receiver: Receiver) -> None:
    (delivery,) = query(database, "SELECT id FROM notify_notification")[0]
    assert len(receiver.requests) == 2
    for request in receiver.requests:
        assert request["headers"]["X-Kmsdash-Delivery"].replace("-", "") == str(delivery).replace("-", "")
        expected = "sha256=" + hmac.new(SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
        assert request["headers"]["X-Kmsdash-Signature"] == expected


def test_a_worker_killed_mid_delivery_leaves_it_to_the_next_pass_after_its_lease(database, tmp_path):
    env = environment(database, tmp_path)
    manage(env, "migrate", "--no-input")
    with Receiver(plan=["stall"]) as receiver:
        manage(env, "add_alert_channel", "hook", "--webhook", receiver.url, "--secret-env", "HOOK_SECRET")
        notify(env)

        worker = subprocess.Popen(
            [sys.executable, "manage.py", "deliver_alerts"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
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
    assert_one_delivery_id_and_signed(database, receiver)


@pytest.mark.e2e
def test_a_celery_worker_killed_mid_delivery_delivers_once_restarted(database, redis_broker, tmp_path):
    env = environment(database, tmp_path, broker=redis_broker)
    manage(env, "migrate", "--no-input")
    broker = Celery("kmsdash-notify-e2e", broker=redis_broker)
    with Receiver(plan=["stall"]) as receiver:
        manage(env, "add_alert_channel", "hook", "--webhook", receiver.url, "--secret-env", "HOOK_SECRET")
        worker = start_worker(env, "notify-e2e@kmsdash", tmp_path / "worker.log")
        try:
            notify(env)  # queues a delivery pass through Redis
            assert receiver.arrived.wait(60), (tmp_path / "worker.log").read_text()[-3000:]
            claimed_at = time.monotonic()
            pool = wait_for(lambda: children(worker.pid), 10, "the worker's child")
            os.kill(pool[0], signal.SIGKILL)
            receiver.release.set()
            # The pool restarts its child; the redelivered pass finds the lease held. The next beat
            # tick after the lease (sent here by hand) delivers.
            time.sleep(max(0.0, claimed_at + LEASE + 0.5 - time.monotonic()))
            broker.send_task("notify.tasks.deliver_alerts")
            wait_for(
                lambda: query(database, "SELECT state FROM notify_notification") == [("delivered",)],
                60,
                "the delivery after the restart",
            )
        finally:
            stop(worker)
    assert sorted(query(database, "SELECT number, ok FROM notify_deliveryattempt")) == [(1, None), (2, True)]
    assert_one_delivery_id_and_signed(database, receiver)
