"""Fault drills with real processes: an S3 ingestion pass interrupted by a Redis outage, a PostgreSQL
restart, a SIGKILLed worker and a second beat, each ending with exactly the events and rollups an
uninterrupted run of the same data stores.

Every drill feeds the emulator the same log objects (fed_objects), slows each GetObject so the
fault lands in the middle of the pass, and compares what the faulted database holds (event ids,
DailyRollup and KeyDay sums) with a clean run of the same objects into a database of its own.

The machine's shared Redis and PostgreSQL are never stopped: the Redis drill starts a redis-server
of its own, the PostgreSQL drill a cluster of its own in a temporary folder. The outage of the
Redis drill is KMSDASH_DRILL_REDIS_OUTAGE_SECONDS (5 by default, to keep `make test` short; the issue
asks for 60: run the drill once with that value). Two beats are drilled as what they do: two
schedule_s3 messages for the same tick, taken by two workers at once. A partition missing for an event's day is left
to the partitioned storage's own tests.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from celery import Celery

from audits.synthetic import identity_role, identity_user, kms_record
from tests.audits.support import environment, manage, stored
from tests.support import children, query, start_worker, stop, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ACCOUNT = "111122223333"
REGION = "us-east-1"
BUCKET = "drill-trail-logs"
OBJECTS, PER_OBJECT = 8, 60
DELAY = 1.0  # seconds per GetObject: a pass takes about OBJECTS * DELAY
PG_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS_OUTAGE = float(os.getenv("KMSDASH_DRILL_REDIS_OUTAGE_SECONDS", "5"))
# Generated once: every drill and the clean run read the very same objects.
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def fed_objects() -> dict[str, list[dict]]:
    objects = {}
    for n in range(OBJECTS):
        start = NOW - timedelta(hours=6) + n * timedelta(minutes=30)
        records = []
        for i in range(PER_OBJECT):
            identity = identity_user(ACCOUNT, "alice") if i % 5 == 0 else identity_role(ACCOUNT, "app", f"s{i % 3}")
            records.append(
                kms_record(
                    event_name=("Decrypt", "GenerateDataKey", "Encrypt", "DescribeKey")[(i + n) % 4],
                    event_time=start + i * timedelta(seconds=20),
                    key_arn=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{(i + n) % 3:08d}-0000-4000-8000-000000000000",
                    identity=identity,
                    region=REGION,
                    recipient_account_id=ACCOUNT,
                )
            )
        day = start.date()
        objects[
            f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{day:%Y/%m/%d}/"
            f"{ACCOUNT}_CloudTrail_{REGION}_{start:%Y%m%dT%H%M}Z_{n:016x}.json.gz"
        ] = records
    return objects


OBJECTS_FED = fed_objects()


def put_objects(aws) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    for key, records in OBJECTS_FED.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(json.dumps({"Records": records}).encode()))


def slow_objects(aws, count: int = OBJECTS) -> None:
    aws.fault(".json.gz", "", count=count, delay=DELAY)


def get_objects(aws) -> int:
    return len([r for r in aws.requests() if r["target"].startswith("s3:GET") and r["target"].endswith(".json.gz")])


def prepare(env: dict[str, str]) -> None:
    manage(env, "migrate", "--no-input")
    manage(env, "add_source", "--account-id", ACCOUNT, "--regions", REGION, "--s3-bucket", BUCKET, "--no-lookup")


CLEAN: dict[str, dict] = {}


def clean_run(aws, database: str, tmp_path: Path) -> dict:
    """The same objects read by one uninterrupted pass, in a database of its own (once per module:
    every drill feeds the very same objects)."""
    if "stored" in CLEAN:
        return CLEAN["stored"]
    env = environment(database, tmp_path / "clean", "memory://")
    prepare(env)
    manage(env, "ingest_cloudtrail", "--source", "s3")
    result = stored(database)
    assert len(result["events"]) == OBJECTS * PER_OBJECT
    CLEAN["stored"] = result
    return result


def settled(database: str):
    rows = query(database, "SELECT status FROM audits_ingestrun WHERE kind = 's3' ORDER BY id")
    return rows if rows and rows[-1][0] == "succeeded" else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the drills --------------------------------------------------------------------------------------


def test_a_worker_sigkilled_mid_s3_pass_is_redelivered_and_nothing_is_lost_or_doubled(
    aws, redis_broker, databases, tmp_path
):
    faulted, clean = databases
    env = environment(faulted, tmp_path, redis_broker)
    prepare(env)
    put_objects(aws)
    slow_objects(aws)
    broker = Celery("kmsdash-drill", broker=redis_broker)
    first = start_worker(env, "drill-first@kmsdash", tmp_path / "first.log")
    second = None
    try:
        broker.send_task("audits.tasks.ingest_s3_task", args=[ACCOUNT, REGION])
        wait_for(lambda: get_objects(aws) >= 3, 60, "the first worker to read two objects")
        # The first worker takes no more messages, so the redelivered one goes to the second worker.
        broker.control.cancel_consumer("celery", destination=["drill-first@kmsdash"], reply=True)
        pool = wait_for(lambda: children(first.pid), 10, "the first worker's child")
        os.kill(pool[0], signal.SIGKILL)
        second = start_worker(env, "drill-second@kmsdash", tmp_path / "second.log")
        wait_for(lambda: settled(faulted), 90, "the redelivered task to finish the pass")
    finally:
        for worker in (first, second):
            if worker is not None:
                stop(worker)

    interrupted = query(faulted, "SELECT count(*) FROM audits_processedobject")
    assert interrupted == [(OBJECTS,)]
    # One pass: the redelivered reader (the same task id) took back the leases of the killed one at
    # once and read its objects again, none of them settled when it died.
    runs = [row[0] for row in query(faulted, "SELECT status FROM audits_ingestrun WHERE kind = 's3' ORDER BY id")]
    assert runs == ["succeeded"], (tmp_path / "first.log").read_text()[-3000:]
    assert get_objects(aws) >= 3 + OBJECTS
    assert query(faulted, "SELECT min(attempts) FROM audits_objectclaim") == [(2,)]
    aws.reset()
    put_objects(aws)
    assert stored(faulted) == clean_run(aws, clean, tmp_path)


def test_redis_stopped_during_an_s3_pass_the_next_pass_resumes_it_and_equals_an_uninterrupted_run(
    aws, databases, tmp_path
):
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed")
    faulted, clean = databases
    port = free_port()
    broker_url = f"redis://127.0.0.1:{port}/0"
    command = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command += ["--dir", str(tmp_path)]

    def start_redis() -> subprocess.Popen:
        process = subprocess.Popen(command, stdout=(tmp_path / "redis.log").open("a"), stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis.from_url(broker_url, socket_connect_timeout=1)

        def answers():
            try:
                return client.ping()
            except redis.RedisError:
                return False

        wait_for(answers, 20, "the drill's redis-server")
        return process

    env = environment(faulted, tmp_path, broker_url)
    # The worker loses the task it was running with the broker (and the message with the broker's
    # memory): its claims wait for their lease to expire, then the next tick's reader takes them.
    env["KMSDASH_S3_LEASE_SECONDS"] = "5"
    prepare(env)
    put_objects(aws)
    slow_objects(aws)
    redis_process = start_redis()
    worker = start_worker(env, "drill-redis@kmsdash", tmp_path / "worker.log")
    try:
        broker = Celery("kmsdash-drill", broker=broker_url)
        broker.send_task("audits.tasks.ingest_s3_task", args=[ACCOUNT, REGION])
        wait_for(lambda: get_objects(aws) >= 3, 60, "the worker to read two objects")
        redis_process.terminate()  # the broker goes away, its queue with it (no persistence)
        redis_process.wait(10)
        time.sleep(REDIS_OUTAGE)
        redis_process = start_redis()
        # Celery terminates a late-acknowledged task whose broker connection is lost (it could not
        # acknowledge it), and the message it gives back is lost with the broker's memory: the pass
        # stops where it was. The next scheduled pass, through the restarted broker, resumes it.
        broker.send_task("audits.tasks.ingest_s3_task", args=[ACCOUNT, REGION])
        wait_for(lambda: settled(faulted), 60 + OBJECTS * DELAY, "the next pass to finish")
    finally:
        stop(worker)
        redis_process.terminate()
        redis_process.wait(10)

    log = (tmp_path / "worker.log").read_text()
    assert "Connection to broker lost" in log, log[-3000:]
    assert query(faulted, "SELECT count(*) FROM audits_processedobject") == [(OBJECTS,)]
    aws.reset()
    put_objects(aws)
    assert stored(faulted) == clean_run(aws, clean, tmp_path)


def test_two_beats_queueing_the_same_s3_pass_leave_one_pass_running_and_the_work_single(
    aws, redis_broker, databases, tmp_path
):
    # Two beat processes each queue schedule_s3 at the same tick: two messages for one scope, taken
    # by two workers at once. The scope's run lock lets one read; the other skips.
    faulted, clean = databases
    env = environment(faulted, tmp_path, redis_broker)
    prepare(env)
    put_objects(aws)
    slow_objects(aws)
    broker = Celery("kmsdash-drill", broker=redis_broker)
    workers = [start_worker(env, f"drill-beat{n}@kmsdash", tmp_path / f"worker{n}.log") for n in (1, 2)]
    try:
        wait_for(lambda: len(broker.control.ping(timeout=1)) >= 2, 60, "both workers")
        for _ in range(2):
            broker.send_task("audits.tasks.schedule_s3")
        wait_for(lambda: settled(faulted), 60 + OBJECTS * DELAY, "the pass to finish")
        time.sleep(2)  # the other worker's skipped pass has long returned by now
    finally:
        for worker in workers:
            stop(worker)

    logs = "".join((tmp_path / f"worker{n}.log").read_text() for n in (1, 2))
    # The second tick found the scope locked by the first, or its pass already listed and open.
    assert "'queued'" in logs and any(f"'{status}'" in logs for status in ("skipped", "running", "resumed")), logs[
        -3000:
    ]
    runs = query(faulted, "SELECT status FROM audits_ingestrun WHERE kind = 's3'")
    assert runs == [("succeeded",)]
    assert get_objects(aws) == OBJECTS  # no object read twice
    aws.reset()
    put_objects(aws)
    assert stored(faulted) == clean_run(aws, clean, tmp_path)


@pytest.fixture
def private_postgres(tmp_path):
    """A PostgreSQL cluster of this test's own (never the machine's shared one), restartable at will."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15's initdb is not installed")
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
        run_as = ["runuser", "-u", "postgres", "--"]
    folder = Path(f"/tmp/kmsdash-drill-pg-{os.getpid()}-{free_port()}")
    folder.mkdir(mode=0o700)
    if run_as:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, timeout=120)

    pg(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w"]
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg(*ctl, "-o", options, "start")

    def restart() -> None:
        pg(*ctl, "-m", "fast", "-o", options, "restart")

    try:
        import psycopg

        with psycopg.connect(f"postgres://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute('CREATE DATABASE "kmsdash"')
        yield f"postgres://postgres@127.0.0.1:{port}/kmsdash", restart
    finally:
        subprocess.run([*run_as, *ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_postgresql_restarted_mid_batch_the_pass_resumes_and_equals_an_uninterrupted_run(
    aws, redis_broker, private_postgres, databases, tmp_path
):
    faulted, restart = private_postgres
    clean = databases[1]
    env = environment(faulted, tmp_path, redis_broker)
    env["KMSDASH_INGEST_BATCH_SIZE"] = "20"  # several commits per object: the restart lands inside one
    prepare(env)
    put_objects(aws)
    slow_objects(aws)
    broker = Celery("kmsdash-drill", broker=redis_broker)
    worker = start_worker(env, "drill-pg@kmsdash", tmp_path / "worker.log")
    try:
        broker.send_task("audits.tasks.ingest_s3_task", args=[ACCOUNT, REGION])
        wait_for(lambda: get_objects(aws) >= 3, 60, "the worker to read two objects")
        restart()
        # The task fails on the lost connection and is retried (audits.tasks.RETRY) on a new one.
        wait_for(lambda: settled(faulted), 90 + OBJECTS * DELAY, "the retried pass to finish")
    finally:
        stop(worker)

    statuses = [row[0] for row in query(faulted, "SELECT status FROM audits_ingestrun WHERE kind = 's3' ORDER BY id")]
    log = (tmp_path / "worker.log").read_text()
    # One pass: the reader failed on the lost connection, was retried with the same task id, and
    # took its own leases back.
    assert statuses == ["succeeded"] and "OperationalError" in log and "Retry in" in log, log[-3000:]
    aws.reset()
    put_objects(aws)
    assert stored(faulted) == clean_run(aws, clean, tmp_path)
