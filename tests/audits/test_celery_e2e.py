"""Crash and resume with real processes: a Celery worker killed mid-window, the task redelivered.

A real worker (prefork, one child) reads LookupEvents from the emulator over HTTP into its own
database (a file on SQLite, a database of its own on PostgreSQL) through Redis. Its child is
SIGKILLed while a window is half read; acks_late + reject_on_worker_lost put the message back,
a second worker reads the window again from the start, and the stored figures must equal an
independent count of what was fed, with the checkpoint advanced once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest
from celery import Celery

from audits.models import Checkpoint, DailyRollup, Event, IngestRun
from audits.synthetic import identity_role, identity_user, kms_record
from tests.support import ROOT, children, query, start_worker, stop, wait_for, worker_number

pytestmark = pytest.mark.e2e

ACCOUNT = "123456789012"  # the emulator's default account
REGION = "us-east-1"
TARGET = "CloudTrail_20131101.LookupEvents"
EVENTS = 400  # 8 pages of 50


@pytest.fixture
def e2e_database(tmp_path, worker_id):
    """A database the test and the workers share: migrated by a subprocess, like a deployment."""
    url = os.getenv("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        import psycopg

        parsed = urlparse(url)
        # One per parallel worker, like pytest-django's test databases.
        name = f"{parsed.path.lstrip('/') or 'kmsdash'}_e2e_{worker_number(worker_id)}"
        admin = parsed._replace(path="/postgres").geturl()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        url = parsed._replace(path=f"/{name}").geturl()
    else:
        url = f"sqlite:///{tmp_path / 'e2e.sqlite3'}"
    yield url
    if url.startswith("postgres"):
        import psycopg

        with psycopg.connect(urlparse(url)._replace(path="/postgres").geturl(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{urlparse(url).path.lstrip("/")}" WITH (FORCE)')


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120
    )


def fed_records() -> list[dict]:
    now = datetime.now(UTC).replace(microsecond=0)
    records = []
    for i in range(EVENTS):
        identity = identity_user(ACCOUNT, "alice") if i % 7 == 0 else identity_role(ACCOUNT, "app", f"s{i % 3}")
        records.append(
            kms_record(
                event_name=("Decrypt", "GenerateDataKey", "Encrypt", "DescribeKey")[i % 4],
                event_time=now - timedelta(minutes=2) - i * timedelta(minutes=3),  # the last ~20 hours
                key_arn=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{i % 3:08d}-0000-4000-8000-000000000000",
                identity=identity,
                region=REGION,
                recipient_account_id=ACCOUNT,
            )
        )
    return records


def test_a_worker_killed_mid_window_is_redelivered_and_the_result_equals_an_uninterrupted_run(
    aws, redis_broker, e2e_database, tmp_path
):
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="kmsdash.settings",
        DATABASE_URL=e2e_database,
        CELERY_BROKER_URL=redis_broker,
        KMSDASH_VAR_DIR=str(tmp_path / "var"),
        KMSDASH_LOOKUP_SETTLE_MINUTES="0",
        KMSDASH_LOOKUP_MAX_WINDOW_MINUTES=str(48 * 60),
        KMSDASH_LOOKUP_INITIAL_DAYS="1",
        KMSDASH_INGEST_BATCH_SIZE="50",  # commit page by page, so the crash leaves a partial window behind
        KMSDASH_LOG_LEVEL="WARNING",
    )
    manage(env, "migrate", "--noinput")
    manage(env, "add_source", "--account-id", ACCOUNT, "--regions", REGION)
    records = fed_records()
    aws.control("cloudtrail/events", {"records": records})
    # Slow pages: the first worker is still inside the window when it dies.
    aws.fault(TARGET, "", count=4, delay=1.5)

    broker = Celery("kmsdash-e2e", broker=redis_broker)
    first = start_worker(env, "e2e-first@kmsdash", tmp_path / "first.log")
    second = None
    try:
        broker.send_task("audits.tasks.ingest_lookup_task", args=[ACCOUNT, REGION])
        wait_for(lambda: len(aws.requests(TARGET)) >= 3, 60, "the first worker to read two pages")
        # The first worker takes no more messages, so the redelivered one goes to the second worker.
        broker.control.cancel_consumer("celery", destination=["e2e-first@kmsdash"], reply=True)
        pool = wait_for(lambda: children(first.pid), 10, "the first worker's child")
        os.kill(pool[0], signal.SIGKILL)
        second = start_worker(env, "e2e-second@kmsdash", tmp_path / "second.log")

        def settled():
            rows = query(e2e_database, f"SELECT status FROM {IngestRun._meta.db_table} ORDER BY id")
            return rows if rows and rows[-1][0] == "succeeded" else None

        wait_for(settled, 60, "the redelivered task to finish the window")
    finally:
        for worker in (first, second):
            if worker is not None:
                stop(worker)

    runs = query(
        e2e_database,
        f"SELECT status, events_new, duplicates, window_end, error FROM {IngestRun._meta.db_table} ORDER BY id",
    )
    assert [run[0] for run in runs] == ["failed", "succeeded"], (tmp_path / "first.log").read_text()[-3000:]
    interrupted, resumed = runs
    assert "Interrupted" in interrupted[4]
    assert 0 < interrupted[1] < EVENTS  # the crash really came mid-window
    assert resumed[2] == interrupted[1]  # the committed part was re-read and recognised
    assert interrupted[1] + resumed[1] == EVENTS

    assert query(e2e_database, f"SELECT count(*) FROM {Event._meta.db_table}") == [(EVENTS,)]
    expected = Counter((r["eventTime"][:10], r["eventName"]) for r in records)
    stored = Counter(
        {
            (str(day)[:10], operation): n
            for day, operation, n in query(
                e2e_database,
                f"SELECT day, operation, sum(count) FROM {DailyRollup._meta.db_table} GROUP BY day, operation",
            )
        }
    )
    assert stored == expected
    checkpoints = query(e2e_database, f"SELECT high_watermark FROM {Checkpoint._meta.db_table}")
    assert len(checkpoints) == 1
    watermark = checkpoints[0][0]
    if isinstance(watermark, str):  # SQLite stores text
        watermark = datetime.fromisoformat(watermark).replace(tzinfo=UTC)
    end = resumed[3] if not isinstance(resumed[3], str) else datetime.fromisoformat(resumed[3]).replace(tzinfo=UTC)
    assert watermark == end
