"""Alert latency benchmark: from a trail log object landing in S3 to the webhook receiving the alert.

    python bench/alerts_latency_bench.py [--schedule SECONDS ...] [--trials N] [--database-url URL]

Everything real except AWS: the project's emulator (moto server + add-ons) in this process holds the
trail bucket; a source reads it (`add_source --s3-bucket`, no LookupEvents); a signed webhook channel
(`add_alert_channel --webhook`) points at an HTTP receiver in this process that checks the signature; a
Celery worker (prefork, 2 children) and beat (the DatabaseScheduler, as deployed) run against Redis.
Beat writes the schedule of settings.CELERY_BEAT_SCHEDULE into its PeriodicTask rows when it starts;
the bench then sets the row "cloudtrail-s3" to every SECONDS/60 minutes (300 s is the default schedule,
`*/5`), which beat picks up within its 5-second check.

Each trial waits a random part of the period, puts one log object holding a ScheduleKeyDeletion (of a
key of its own, so every trial opens a new alert) into the bucket, and times until the receiver has
the alert: beat -> schedule_s3 -> ingest_s3_task -> evaluate_alerts (queued after the run) ->
notify_alert (queues deliver_alerts on commit) -> deliver_alerts -> POST. Printed per schedule:
min/median/max of that total, and of the part that is not waiting for the schedule (the ingestion
run's start in the ledger, IngestRun.started_at, to the webhook's arrival).

The database is a temporary PostgreSQL database (dropped at the end) or, with --database-url sqlite,
a SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kmsdash_latency_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/6"
ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "kmsdash-latency-trail"
SECRET_ENV = "KMSDASH_BENCH_WEBHOOK_SECRET"
SECRET = uuid.uuid4().hex


class Receiver:
    """The webhook's far end: records (arrival time, body) of every correctly signed POST."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, bytes]] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.time()
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if hmac.compare_digest(expected, self.headers.get("X-Kmsdash-Signature", "")):
                    receiver.arrivals.append((arrived, body))
                else:
                    receiver.bad_signatures += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def arrival_of(self, marker: str) -> float | None:
        return next((at for at, body in self.arrivals if marker.encode() in body), None)


def deletion_log(key_arn: str) -> bytes:
    from audits.synthetic import identity_user, kms_record

    record = kms_record(
        event_name="ScheduleKeyDeletion",
        event_time=datetime.now(UTC).replace(microsecond=0),
        key_arn=key_arn,
        identity=identity_user(ACCOUNT, "mallory"),
        region=REGION,
        recipient_account_id=ACCOUNT,
        request_parameters={"keyId": key_arn, "pendingWindowInDays": 7},
        read_only=False,
    )
    return gzip.compress(json.dumps({"Records": [record]}).encode())


def log_key(now: datetime) -> str:
    # The trail's layout: AWSLogs/<account>/CloudTrail/<region>/<yyyy/mm/dd>/<account>_CloudTrail_..._<stamp>_<id>.json.gz
    return (
        f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{now:%Y/%m/%d}/"
        f"{ACCOUNT}_CloudTrail_{REGION}_{now:%Y%m%dT%H%MZ}_{uuid.uuid4().hex[:16]}.json.gz"
    )


def celery(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "kmsdash", *args, "--loglevel=INFO"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped with its prefork children
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def set_s3_schedule(seconds: int) -> None:
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    minutes = seconds // 60
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="*" if minutes == 1 else f"*/{minutes}",
        hour="*",
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone="UTC",
    )
    task = PeriodicTask.objects.get(name="cloudtrail-s3")
    task.crontab = crontab
    task.interval = None
    task.save()  # the save signal bumps PeriodicTasks.last_update, which beat polls


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def run_trial(s3, receiver: Receiver, period: int, number: int) -> dict:
    from audits.models import IngestRun

    time.sleep(random.uniform(0, period))
    key_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{uuid.uuid4()}"
    now = datetime.now(UTC)
    s3.put_object(Bucket=BUCKET, Key=log_key(now), Body=deletion_log(key_arn))
    put_at = time.time()
    hook_at = wait_for(lambda: receiver.arrival_of(key_arn), period * 2 + 120, f"the alert of trial {number}")
    # The run that read the object: the first S3 run with records to finish after the put.
    run = (
        IngestRun.objects.filter(kind=IngestRun.Kind.S3, records_read__gt=0, finished_at__gte=now)
        .order_by("started_at")
        .first()
    )
    started = run.started_at.timestamp() if run else float("nan")
    trial = {"total": hook_at - put_at, "after_ingest_start": hook_at - started, "wait": started - put_at}
    print(
        f"  trial {number}: {trial['total']:6.1f} s total = {trial['wait']:5.1f} s until the ingestion run "
        f"started + {trial['after_ingest_start']:5.2f} s from there to the webhook",
        flush=True,
    )
    return trial


def summary(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--schedule",
        type=int,
        action="append",
        choices=[60, 120, 180, 300, 600],
        help="S3 ingestion period in seconds (repeatable; default: 60). 300 is the shipped schedule.",
    )
    parser.add_argument("--trials", type=int, default=3, help="Trials per schedule (default 3).")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_PG,
        help=f"Temporary database, dropped at the end (default {DEFAULT_PG}); "
        "'sqlite' for a SQLite file in a temporary directory.",
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help=f"Celery broker (default {DEFAULT_REDIS}).")
    args = parser.parse_args()
    schedules = args.schedule or [60]

    import redis

    broker = redis.Redis.from_url(args.redis_url, socket_connect_timeout=2)
    broker.ping()
    broker.flushdb()

    tmp = Path(tempfile.mkdtemp(prefix="kmsdash-latency-"))
    database_url = f"sqlite:///{tmp / 'bench.sqlite3'}" if args.database_url == "sqlite" else args.database_url
    if database_url.startswith("postgres"):
        from bench.ingest_bench import recreate_pg_database

        recreate_pg_database(database_url)

    from emulator.server import EmulatorServer

    emulator = EmulatorServer().start()
    receiver = Receiver()
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": args.redis_url,
            "KMSDASH_VAR_DIR": str(tmp / "var"),
            "KMSDASH_LOG_LEVEL": "INFO",
            "KMSDASH_ALERT_MAX_NOTIFICATIONS_PER_HOUR": "1000",
            SECRET_ENV: SECRET,
            "AWS_ENDPOINT_URL": emulator.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    os.environ.pop("AWS_PROFILE", None)
    env = dict(os.environ)

    import boto3
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", "--noinput", verbosity=0)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    call_command("add_source", "--account-id", ACCOUNT, "--regions", REGION, "--s3-bucket", BUCKET, "--no-lookup")
    call_command("add_alert_channel", "bench", "--webhook", receiver.url, "--secret-env", SECRET_ENV)

    from django_celery_beat.models import PeriodicTask

    worker = celery(
        env, tmp / "worker.log", "worker", "--pool=prefork", "-c", "2", "--without-gossip", "--without-mingle"
    )
    beat = celery(env, tmp / "beat.log", "beat")
    results: dict[int, list[dict]] = {}
    try:
        wait_for(lambda: PeriodicTask.objects.filter(name="cloudtrail-s3").exists(), 120, "beat's schedule rows")
        time.sleep(2)  # beat has written all its rows before it reads them back
        for period in schedules:
            set_s3_schedule(period)
            time.sleep(6)  # beat polls for changed rows every 5 s
            print(f"S3 ingestion every {period} s, {args.trials} trials:", flush=True)
            results[period] = [run_trial(s3, receiver, period, n + 1) for n in range(args.trials)]
    finally:
        stop(beat)
        stop(worker)
        emulator.stop()
        receiver.server.shutdown()
        from django.db import connections

        connections.close_all()
        if database_url.startswith("postgres"):
            from bench.ingest_bench import recreate_pg_database

            recreate_pg_database(database_url, drop_only=True)
        broker.flushdb()
        if results:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}", file=sys.stderr)

    print()
    print("| schedule | trials | object to webhook, min / median / max | ingestion run start to webhook |")
    print("| --- | --- | --- | --- |")
    for period, trials in results.items():
        print(
            f"| every {period} s | {len(trials)} | {summary([t['total'] for t in trials])} s "
            f"| {summary([t['after_ingest_start'] for t in trials])} s |"
        )
    if receiver.bad_signatures:
        print(f"{receiver.bad_signatures} POSTs with a wrong signature", file=sys.stderr)


if __name__ == "__main__":
    main()
