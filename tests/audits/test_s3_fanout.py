"""An S3 pass read by many workers through ObjectClaim rows (audits/sources/s3.py).

In place: claims are taken in disjoint batches (on PostgreSQL without waiting for a batch another
transaction holds), an expired lease is taken again and an object read twice doubles nothing, the
checkpoint moves only once every claim has settled, and a quarantined object blocks nothing.

With real processes: two Celery workers (prefork, one child each) reading through Redis from the
emulator over HTTP into a database of their own, compared with a serial pass (`ingest_cloudtrail`)
of the same objects into another: each object fetched exactly once (the emulator's request log),
the same events and rollups; a worker SIGKILLed mid-pass, whose leases expire and whose objects the
other worker reads; two scopes read in parallel.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from celery import Celery
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from audits.ingest import Ingestor
from audits.models import Checkpoint, DailyRollup, Event, IngestRun, ObjectClaim, Quarantine, Source
from audits.services import read_s3_claims
from audits.sources import s3
from audits.synthetic import identity_role, identity_user, kms_record
from tests.audits.support import environment, manage, stored
from tests.support import children, query, start_worker, stop, wait_for

ACCOUNT, OTHER = "111122223333", "444455556666"
REGION, OTHER_REGION = "us-east-1", "eu-west-1"
BUCKET = "fanout-trail-logs"
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def records(account: str, region: str, n: int, per: int) -> list[dict]:
    start = NOW - timedelta(hours=8) + n * timedelta(minutes=20)
    return [
        kms_record(
            event_name=("Decrypt", "GenerateDataKey", "Encrypt", "DescribeKey")[(i + n) % 4],
            event_time=start + i * timedelta(seconds=15),
            key_arn=f"arn:aws:kms:{region}:{account}:key/{(i + n) % 3:08d}-0000-4000-8000-000000000000",
            identity=identity_user(account, "alice") if i % 5 == 0 else identity_role(account, "app", f"s{i % 3}"),
            region=region,
            recipient_account_id=account,
        )
        for i in range(per)
    ]


def fed_objects(account: str, region: str, count: int, per: int) -> dict[str, list[dict]]:
    objects = {}
    for n in range(count):
        recs = records(account, region, n, per)
        stamp = datetime.fromisoformat(recs[0]["eventTime"].replace("Z", "+00:00"))
        objects[
            f"AWSLogs/{account}/CloudTrail/{region}/{stamp:%Y/%m/%d}/"
            f"{account}_CloudTrail_{region}_{stamp:%Y%m%dT%H%M}Z_{n:016x}.json.gz"
        ] = recs
    return objects


def put_objects(objects: dict[str, list[dict]]) -> None:
    client = boto3.client("s3", region_name=REGION)
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    for key, recs in objects.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(json.dumps({"Records": recs}).encode()))


def object_gets(aws) -> Counter:
    prefix = f"s3:GET /{BUCKET}/"
    return Counter(
        r["target"].removeprefix(prefix).split("?")[0]
        for r in aws.requests()
        if r["target"].startswith(prefix) and ".json.gz" in r["target"]
    )


# --- in place ---------------------------------------------------------------------------------------


@pytest.fixture
def s3_source(db, aws, settings):
    settings.KMSDASH_S3_INITIAL_DAYS = 2
    settings.KMSDASH_S3_CLAIM_BATCH = 2
    return Source.objects.create(account_id=ACCOUNT, regions=[REGION], s3_bucket=BUCKET, lookup_enabled=False)


@pytest.mark.emulator
def test_two_readers_take_disjoint_batches_and_a_live_lease_is_never_taken(s3_source):
    put_objects(fed_objects(ACCOUNT, REGION, 5, 3))
    run = s3.list_pass(s3_source, REGION).run

    first, second = s3.claim_batch(run.pk, "reader-a"), s3.claim_batch(run.pk, "reader-b")
    third, fourth = s3.claim_batch(run.pk, "reader-c"), s3.claim_batch(run.pk, "reader-d")

    assert [len(batch) for batch in (first, second, third, fourth)] == [2, 2, 1, 0]
    keys = [claim.key for batch in (first, second, third) for claim in batch]
    assert len(set(keys)) == 5
    assert {claim.lease_owner for claim in second} == {"reader-b"}


@pytest.mark.emulator
def test_an_expired_lease_is_taken_by_another_reader_and_the_object_read_twice_doubles_nothing(s3_source):
    objects = fed_objects(ACCOUNT, REGION, 3, 10)
    put_objects(objects)
    run = s3.list_pass(s3_source, REGION).run
    dead = s3.claim_batch(run.pk, "dead-reader")  # two objects
    # The dead reader had committed the first half of its first object before it died.
    ingestor = Ingestor(run)
    for record in objects[dead[0].key][:5]:
        ingestor.add(record)
    ingestor.flush()
    assert not s3.claim_batch(run.pk, "live-reader")[1:]  # only the third object: the lease holds
    s3.release_leases(run.pk, "live-reader")
    ObjectClaim.objects.filter(lease_owner="dead-reader").update(lease_expires=timezone.now() - timedelta(seconds=1))

    s3.read_claims(run, "live-reader")
    closed = s3.settle_run(run.pk)

    assert closed is not None and closed.status == IngestRun.Status.SUCCEEDED
    assert Event.objects.count() == 30
    assert DailyRollup.objects.aggregate(total=Sum("count"))["total"] == 30
    claims = {claim.key: claim for claim in ObjectClaim.objects.filter(run=run)}
    assert {c.state for c in claims.values()} == {"done"}
    assert claims[dead[0].key].lease_owner == "live-reader" and claims[dead[0].key].attempts == 2
    assert closed.events_new == 30 and closed.duplicates == 5 and closed.files == 3


@pytest.mark.emulator
def test_the_checkpoint_moves_only_once_every_claim_has_settled(s3_source):
    put_objects(fed_objects(ACCOUNT, REGION, 4, 3))
    run = s3.list_pass(s3_source, REGION).run
    held = s3.claim_batch(run.pk, "slow-reader")

    s3.read_claims(run, "fast-reader")  # the two others
    assert s3.settle_run(run.pk) is None
    assert not Checkpoint.objects.exists()
    run.refresh_from_db()
    assert run.status == IngestRun.Status.RUNNING and Event.objects.count() == 6

    ObjectClaim.objects.filter(pk__in=[c.pk for c in held]).update(lease_expires=timezone.now())
    s3.read_claims(run, "fast-reader")
    closed = s3.settle_run(run.pk)

    assert closed is not None and closed.status == IngestRun.Status.SUCCEEDED
    assert Checkpoint.objects.get().high_watermark == closed.checkpoint_to == closed.window_end
    assert s3.settle_run(run.pk) is None  # closed once


@pytest.mark.emulator
def test_a_quarantined_object_settles_as_failed_with_its_reason_and_the_checkpoint_still_moves(s3_source):
    objects = fed_objects(ACCOUNT, REGION, 3, 4)
    put_objects(objects)
    bad = sorted(objects)[1]
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=bad, Body=b"\x1f\x8b not a gzip")

    run = s3.list_pass(s3_source, REGION).run
    s3.read_claims(run, "reader")
    closed = s3.settle_run(run.pk)

    assert closed is not None and closed.status == IngestRun.Status.SUCCEEDED and closed.files == 2
    claim = ObjectClaim.objects.get(key=bad)
    assert (claim.state, claim.retry) == ("failed", False) and claim.reason.startswith(s3.UNREADABLE)
    assert Quarantine.objects.get(location__contains=bad).reason == claim.reason
    assert Checkpoint.objects.exists() and Event.objects.count() == 8


@pytest.mark.emulator
def test_an_object_to_read_again_keeps_the_checkpoint_and_the_next_pass_reads_it(s3_source, aws):
    objects = fed_objects(ACCOUNT, REGION, 3, 4)
    put_objects(objects)
    denied = sorted(objects)[0]
    aws.fault(denied, error="AccessDenied", status=403, count=1)

    run = s3.list_pass(s3_source, REGION).run
    s3.read_claims(run, "reader")
    closed = s3.settle_run(run.pk)

    assert closed is not None and closed.status == IngestRun.Status.FAILED
    assert "1 object(s) could not be read" in closed.error and denied in closed.error
    claim = ObjectClaim.objects.get(key=denied)
    assert (claim.state, claim.retry) == ("failed", True)
    assert not Checkpoint.objects.exists()
    nxt = s3.ingest_s3(s3_source, REGION)
    assert nxt.run.status == IngestRun.Status.SUCCEEDED and nxt.processed == 1
    assert Event.objects.count() == 12 and Checkpoint.objects.exists()


@pytest.mark.emulator
def test_a_pass_whose_source_was_removed_is_closed_by_its_next_reader(s3_source):
    put_objects(fed_objects(ACCOUNT, REGION, 2, 2))
    run = s3.list_pass(s3_source, REGION).run
    Source.objects.filter(pk=s3_source.pk).update(enabled=False)

    result = read_s3_claims(run.pk, "reader")

    run.refresh_from_db()
    assert result.status == "missing" and run.status == IngestRun.Status.FAILED
    assert "removed" in run.error and not Event.objects.exists()


@pytest.mark.emulator
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_batch_locked_by_another_transaction_is_skipped_without_waiting(s3_source):
    if connection.vendor != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite runs one writer at a time")
    put_objects(fed_objects(ACCOUNT, REGION, 4, 2))
    run = s3.list_pass(s3_source, REGION).run
    first_two = list(ObjectClaim.objects.filter(run=run).order_by("pk").values_list("pk", flat=True)[:2])
    locked, release = threading.Event(), threading.Event()

    def hold_rows():
        # Another reader's claiming transaction, still open on the first two rows.
        with transaction.atomic():
            list(ObjectClaim.objects.select_for_update().filter(pk__in=first_two))
            locked.set()
            release.wait(30)
        connection.close()

    holder = threading.Thread(target=hold_rows)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        batch = s3.claim_batch(run.pk, "reader")
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert waited < 5
    assert [claim.pk for claim in batch] and not {claim.pk for claim in batch} & set(first_two)


# --- with real workers ------------------------------------------------------------------------------


def prepare(env: dict[str, str], scopes: list[tuple[str, str]]) -> None:
    manage(env, "migrate", "--no-input")
    for account in dict.fromkeys(account for account, _ in scopes):
        regions = ",".join(region for acct, region in scopes if acct == account)
        manage(env, "add_source", "--account-id", account, "--regions", regions, "--s3-bucket", BUCKET, "--no-lookup")


def serial(env: dict[str, str], database: str, scopes: list[tuple[str, str]]) -> dict:
    """The same objects read by `ingest_cloudtrail --source s3` in one process, into `database`."""
    env = {**env, "DATABASE_URL": database, "CELERY_BROKER_URL": "memory://"}
    prepare(env, scopes)
    manage(env, "ingest_cloudtrail", "--source", "s3")
    return stored(database)


def fan_out_env(database: str, tmp_path, broker: str, **extra: str) -> dict[str, str]:
    env = environment(database, tmp_path, broker)
    env.update(KMSDASH_S3_CLAIM_BATCH="2", KMSDASH_S3_FANOUT_TASKS="8", **extra)
    return env


def runs(database: str) -> list[tuple]:
    return query(database, "SELECT account_id, region, status, files, events_new FROM audits_ingestrun ORDER BY id")


def settled(database: str, count: int = 1):
    rows = runs(database)
    return rows if len(rows) >= count and all(row[2] != "running" for row in rows) else None


def start_two(env, tmp_path, broker: Celery, tag: str):
    workers = [start_worker(env, f"{tag}{n}@kmsdash", tmp_path / f"{tag}{n}.log") for n in (1, 2)]
    wait_for(lambda: len(broker.control.ping(timeout=1)) >= 2, 60, "both workers")
    return workers


def read_by(log: str) -> set[str]:
    """The ids of the read_s3_claims_task executions a worker's log says it ran."""
    marker = "Task audits.tasks.read_s3_claims_task["
    return {line.split(marker)[1].split("]")[0] for line in log.splitlines() if marker in line and "received" in line}


@pytest.mark.e2e
def test_two_workers_fetch_each_object_exactly_once_and_store_what_a_serial_pass_stores(
    aws, redis_broker, databases, tmp_path
):
    fanned, serial_db = databases
    objects = fed_objects(ACCOUNT, REGION, 16, 40)
    env = fan_out_env(fanned, tmp_path, redis_broker)
    prepare(env, [(ACCOUNT, REGION)])
    put_objects(objects)
    aws.fault(".json.gz", "", count=10_000, delay=0.25)  # both workers find claims to take
    broker = Celery("kmsdash-fanout", broker=redis_broker)
    workers = start_two(env, tmp_path, broker, "fanout")
    try:
        broker.send_task("audits.tasks.ingest_s3_task", args=[ACCOUNT, REGION])
        wait_for(lambda: settled(fanned), 120, "the pass to be read and closed")
    finally:
        for worker in workers:
            stop(worker)

    assert object_gets(aws) == Counter(dict.fromkeys(objects, 1))
    assert runs(fanned) == [(ACCOUNT, REGION, "succeeded", 16, 16 * 40)]
    owners = dict(query(fanned, "SELECT key, lease_owner FROM audits_objectclaim"))
    logs = [(tmp_path / f"fanout{n}.log").read_text() for n in (1, 2)]
    for log in logs:  # each worker read some of the objects
        assert set(owners.values()) & read_by(log), log[-3000:]
    assert query(fanned, "SELECT count(*) FROM audits_checkpoint") == [(1,)]
    aws.reset()
    assert stored(fanned) == serial(env, serial_db, [(ACCOUNT, REGION)])


@pytest.mark.e2e
def test_a_worker_killed_mid_pass_leaves_its_leases_to_expire_and_the_other_reads_its_objects(
    aws, redis_broker, databases, tmp_path
):
    fanned, serial_db = databases
    objects = fed_objects(ACCOUNT, REGION, 16, 40)
    lease = 4
    env = fan_out_env(fanned, tmp_path, redis_broker, KMSDASH_S3_LEASE_SECONDS=str(lease))
    prepare(env, [(ACCOUNT, REGION)])
    put_objects(objects)
    aws.fault(".json.gz", "", count=10_000, delay=0.4)
    broker = Celery("kmsdash-fanout", broker=redis_broker)
    victim, survivor = start_two(env, tmp_path, broker, "killed")
    try:
        broker.send_task("audits.tasks.ingest_s3_task", args=[ACCOUNT, REGION])
        wait_for(lambda: sum(object_gets(aws).values()) >= 6, 60, "both workers to be reading")
        # The whole worker dies (its parent too, so nothing gives its message back): only the
        # expiry of its leases lets another reader take its objects.
        pool = children(victim.pid)
        os.kill(victim.pid, signal.SIGKILL)
        for pid in pool:
            os.kill(pid, signal.SIGKILL)
        victim.wait(10)
        killed_ids = read_by((tmp_path / "killed1.log").read_text())
        held = query(fanned, "SELECT key, lease_owner FROM audits_objectclaim WHERE state = 'leased'")
        orphaned = {key for key, owner in held if owner in killed_ids}
        assert orphaned, (held, killed_ids)
        # The beat's next tick (every 5 minutes in production) once the leases have expired.
        time.sleep(lease + 1)
        broker.send_task("audits.tasks.ingest_s3_task", args=[ACCOUNT, REGION])
        wait_for(lambda: settled(fanned), 120, "the survivor to read the rest and close the pass")
    finally:
        stop(survivor)
        stop(victim)

    passes = runs(fanned)
    assert passes[0] == (ACCOUNT, REGION, "succeeded", 16, 16 * 40)
    # The survivor's readers may have taken the expired claims before the tick: it then listed a
    # new pass, with nothing left to read.
    assert all(row[2:] == ("succeeded", 0, 0) for row in passes[1:])
    claims = {
        key: (owner, attempts)
        for key, owner, attempts in query(fanned, "SELECT key, lease_owner, attempts FROM audits_objectclaim")
    }
    for key in orphaned:  # taken again by the survivor's readers, after the lease expired
        owner, attempts = claims[key]
        assert owner not in killed_ids and attempts == 2
    gets = object_gets(aws)
    assert set(gets) == set(objects)
    assert {key for key, n in gets.items() if n > 1} <= orphaned  # only the dead reader's were read twice
    aws.reset()
    assert stored(fanned) == serial(env, serial_db, [(ACCOUNT, REGION)])


@pytest.mark.e2e
def test_two_scopes_are_read_in_parallel_and_each_equals_a_serial_pass(aws, redis_broker, databases, tmp_path):
    fanned, serial_db = databases
    scopes = [(ACCOUNT, REGION), (OTHER, OTHER_REGION)]
    objects = {**fed_objects(ACCOUNT, REGION, 10, 30), **fed_objects(OTHER, OTHER_REGION, 10, 30)}
    env = fan_out_env(fanned, tmp_path, redis_broker)
    prepare(env, scopes)
    put_objects(objects)
    aws.fault(".json.gz", "", count=10_000, delay=0.25)
    broker = Celery("kmsdash-fanout", broker=redis_broker)
    workers = start_two(env, tmp_path, broker, "scopes")
    try:
        broker.send_task("audits.tasks.schedule_s3")  # as beat does: one ingest_s3_task per scope
        wait_for(lambda: settled(fanned, 2), 120, "both passes to be read and closed")
    finally:
        for worker in workers:
            stop(worker)

    assert object_gets(aws) == Counter(dict.fromkeys(objects, 1))
    assert sorted(runs(fanned)) == [
        (ACCOUNT, REGION, "succeeded", 10, 300),
        (OTHER, OTHER_REGION, "succeeded", 10, 300),
    ]
    (first_start, first_end), (second_start, second_end) = query(
        fanned, "SELECT started_at, finished_at FROM audits_ingestrun ORDER BY id"
    )
    assert first_start < second_end and second_start < first_end  # the two passes overlapped
    assert query(fanned, "SELECT count(*) FROM audits_checkpoint") == [(2,)]
    aws.reset()
    assert stored(fanned) == serial(env, serial_db, scopes)
