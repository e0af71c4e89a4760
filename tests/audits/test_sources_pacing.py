"""One LookupEvents rate limit per (account, region), shared by every caller through the database."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from audits.models import Event, IngestRun, Source
from audits.services import run_scope
from audits.sources import pacing
from audits.synthetic import identity_role, kms_record
from inventory import services
from inventory.models import Trail

ACCOUNT = "111122223333"
REGION = "us-east-1"
TARGET = "CloudTrail_20131101.LookupEvents"
# The SQLite test database is in memory with a shared cache: a second writer fails at once
# ("table is locked") where a database file queues it for its busy timeout, as in production.
needs_server_database = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="concurrent writers need a server database in tests"
)


def in_threads(count, work):
    """Run work(i) in `count` threads at once, each on its own database connection, like processes."""
    errors = []

    def run(i):
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@needs_server_database
@pytest.mark.django_db(transaction=True)
def test_turns_claimed_by_two_threads_at_once_are_never_closer_than_one_interval(settings):
    settings.KMSDASH_LOOKUP_RATE_PER_SECOND = 50
    step = pacing.interval()
    claimed: list[float] = []

    def claim(_):
        for _ in range(15):
            claimed.append(pacing.claim_turn(ACCOUNT, REGION))

    in_threads(2, claim)

    starts = sorted(claimed)
    assert len(starts) == 30
    assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= step - 1e-6


@needs_server_database
@pytest.mark.django_db(transaction=True)
def test_callers_that_wait_for_their_turn_never_call_before_it(settings):
    settings.KMSDASH_LOOKUP_RATE_PER_SECOND = 20
    turns: list[tuple[float, float]] = []

    def call(_):
        for _ in range(5):
            turn = pacing.wait_turn(ACCOUNT, REGION)
            turns.append((turn, time.time()))

    started = time.time()
    in_threads(2, call)

    starts = sorted(turn for turn, _ in turns)
    assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= pacing.interval() - 1e-6
    assert all(called >= turn for turn, called in turns)
    # Ten turns take nine intervals at least, whichever thread got them.
    assert max(called for _, called in turns) - started >= 9 * pacing.interval()


@pytest.mark.django_db
def test_each_account_and_region_has_its_own_turns(settings):
    settings.KMSDASH_LOOKUP_RATE_PER_SECOND = 0.1  # ten seconds a turn, after the first
    first = pacing.claim_turn(ACCOUNT, REGION)
    assert pacing.claim_turn(ACCOUNT, REGION) - first == pytest.approx(pacing.interval())
    now = time.time()
    assert pacing.claim_turn(ACCOUNT, "eu-west-1") <= now + 1
    assert pacing.claim_turn("444455556666", REGION) <= now + 1


@needs_server_database
@pytest.mark.emulator
@pytest.mark.django_db(transaction=True)
def test_inventory_and_ingestion_reading_one_scope_at_once_stay_under_its_rate(aws, settings):
    settings.KMSDASH_LOOKUP_RATE_PER_SECOND = 2
    settings.KMSDASH_LOOKUP_SETTLE_MINUTES = 0
    settings.KMSDASH_LOOKUP_INITIAL_DAYS = 1
    settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES = 48 * 60  # one window: 4 pages of 50
    Source.objects.create(account_id=ACCOUNT, regions=[REGION], role_arn=f"arn:aws:iam::{ACCOUNT}:role/kmsdash-reader")
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    admin = identity_role(ACCOUNT, "admin", "change-1")
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000000"
    decrypts = [
        kms_record(
            event_name="Decrypt",
            event_time=end - i * timedelta(seconds=20),
            key_arn=key,
            identity=identity_role(ACCOUNT, "app", "s1"),
            region=REGION,
            recipient_account_id=ACCOUNT,
        )
        for i in range(200)
    ]
    # 200 PutEventSelectors of 200 trails: the inventory reads all its 4 pages of them.
    changes = []
    for i in range(200):
        trail = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/t{i}"
        record = kms_record(
            event_name="PutEventSelectors",
            event_time=end - i * timedelta(minutes=1),
            key_arn=None,
            identity=admin,
            region=REGION,
            recipient_account_id=ACCOUNT,
            request_parameters={"trailName": trail, "eventSelectors": [{"readWriteType": "All"}]},
            response_elements={"trailARN": trail},
        )
        record["eventSource"] = "cloudtrail.amazonaws.com"
        changes.append(record)
    aws.control("cloudtrail/events", {"records": decrypts + changes})

    def work(i):
        if i == 0:
            assert run_scope("lookup", ACCOUNT, REGION).status == "done"
        else:
            services.ingest_keys(Source.objects.get(account_id=ACCOUNT), REGION)

    in_threads(2, work)

    assert Event.objects.count() == 200
    assert Trail.objects.count() == 200
    calls = sorted(r["time"] for r in aws.requests(TARGET))
    pages = IngestRun.objects.get(kind="lookup").pages
    assert pages >= 4
    # The limiter spaces when calls start; the emulator counts when they arrive. Both callers share
    # one interpreter here, so a thread held up between its turn and its request arriving (a busy
    # CI machine) can bunch one call with the next and be throttled once, then retried at its own
    # turn. More than one means the callers are not sharing turns.
    throttled = aws.control("cloudtrail/throttled").get(f"{ACCOUNT}/{REGION}", 0)
    assert throttled <= 1
    assert len(calls) == pages + 4 + throttled
    # Shared turns put all calls one interval apart: 8 calls span 7 intervals (one interval of
    # slack for a late arrival). Each caller pacing alone would span about 3.
    assert calls[-1] - calls[0] >= (len(calls) - 2) * pacing.interval()


@pytest.mark.emulator
@pytest.mark.django_db(transaction=True)
def test_a_trail_change_is_attributed_by_the_same_principal_rule_as_every_event(aws):
    source = Source.objects.create(
        account_id=ACCOUNT, regions=[REGION], role_arn=f"arn:aws:iam::{ACCOUNT}:role/kmsdash-reader"
    )
    trail = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/shadow"
    record = kms_record(
        event_name="PutEventSelectors",
        event_time=datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1),
        key_arn=None,
        identity=identity_role(ACCOUNT, "admin", "alice"),
        region=REGION,
        recipient_account_id=ACCOUNT,
        request_parameters={"trailName": trail, "eventSelectors": [{"readWriteType": "All"}]},
        response_elements={"trailARN": trail},
    )
    record["eventSource"] = "cloudtrail.amazonaws.com"
    aws.control("cloudtrail/events", {"records": [record]})

    services.ingest_keys(source, REGION)

    # A role session is its role (audits.cloudtrail.principal_of), as on every page of events.
    assert Trail.objects.get(arn=trail).change["principal"] == f"arn:aws:iam::{ACCOUNT}:role/admin"
