"""Celery tasks for CloudTrail ingestion: fan-out, locks, retries only for transient errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from celery.signals import before_task_publish
from django.conf import settings as django_settings
from django.db import OperationalError

from audits import tasks
from audits.models import Event, IngestRun, Source
from audits.synthetic import identity_role, kms_record
from kmsdash.celery import app
from kmsdash.locks import run_lock

pytestmark = pytest.mark.django_db

ACCOUNT = "123456789012"
TARGET = "CloudTrail_20131101.LookupEvents"


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    settings.KMSDASH_LOCK_DIR = tmp_path / "locks"
    settings.KMSDASH_LOOKUP_SETTLE_MINUTES = 0
    settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES = 48 * 60


@pytest.fixture
def published():
    """Messages the tasks publish, sent to an in-memory broker instead of a real one."""
    sent: list[tuple[str, list]] = []

    def record(sender=None, body=None, **kwargs):
        sent.append((sender, list(body[0])))

    def fresh_pools():
        # What Celery itself does after a fork: the next publish builds pools for the current broker.
        app._pool = None
        app.amqp._producer_pool = None

    previous = app.conf.broker_url
    app.conf.broker_url = "memory://"
    fresh_pools()
    before_task_publish.connect(record)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(record)
        app.conf.broker_url = previous
        fresh_pools()


def test_scheduling_fans_out_one_task_per_enabled_source_and_region(published):
    Source.objects.create(account_id="111122223333", regions=["us-east-1", "eu-west-1"], s3_bucket="logs-a")
    Source.objects.create(
        account_id="444455556666", regions=["ap-southeast-2"], lookup_enabled=False, s3_bucket="logs-b"
    )
    Source.objects.create(account_id="777788889999", regions=["us-west-2"], enabled=False)
    Source.objects.create(account_id="222233334444", regions=["eu-west-1"])

    assert tasks.schedule_lookup() == 3
    assert tasks.schedule_s3() == 3

    assert sorted(published) == sorted(
        [
            ("audits.tasks.ingest_lookup_task", ["111122223333", "us-east-1"]),
            ("audits.tasks.ingest_lookup_task", ["111122223333", "eu-west-1"]),
            ("audits.tasks.ingest_lookup_task", ["222233334444", "eu-west-1"]),
            ("audits.tasks.ingest_s3_task", ["111122223333", "us-east-1"]),
            ("audits.tasks.ingest_s3_task", ["111122223333", "eu-west-1"]),
            ("audits.tasks.ingest_s3_task", ["444455556666", "ap-southeast-2"]),
        ]
    )


def test_the_beat_schedule_names_registered_tasks_and_expires_before_the_next_tick():
    for name in ("cloudtrail-lookup", "cloudtrail-s3"):
        entry = django_settings.CELERY_BEAT_SCHEDULE[name]
        assert entry["task"] in app.tasks
        assert 0 < entry["options"]["expires"] < 300


def test_the_hard_time_limit_stays_under_the_broker_visibility_timeout():
    visibility = django_settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    assert django_settings.CELERY_TASK_TIME_LIMIT < visibility
    assert django_settings.CELERY_TASK_ACKS_LATE and django_settings.CELERY_TASK_REJECT_ON_WORKER_LOST


@pytest.mark.parametrize("task", [tasks.ingest_lookup_task, tasks.ingest_s3_task])
def test_ingest_tasks_retry_transient_errors_only_and_a_bounded_number_of_times(task):
    assert task.max_retries == 5
    assert task.retry_backoff and task.retry_jitter
    for transient in (EndpointConnectionError, OperationalError, tasks.Throttled):
        assert issubclass(transient, task.autoretry_for)
    assert not issubclass(ClientError, task.autoretry_for)


@pytest.mark.emulator
def test_the_task_reads_its_scope_and_returns_done(aws):
    Source.objects.create(account_id=ACCOUNT, regions=["us-east-1"])
    aws.control(
        "cloudtrail/events",
        {
            "records": [
                kms_record(
                    event_name="Decrypt",
                    event_time=datetime.now(UTC) - timedelta(minutes=3),
                    key_arn=None,
                    identity=identity_role(ACCOUNT, "app", "s"),
                    region="us-east-1",
                    recipient_account_id=ACCOUNT,
                )
            ]
        },
    )

    assert tasks.ingest_lookup_task(ACCOUNT, "us-east-1") == "done"
    assert Event.objects.count() == 1


@pytest.mark.emulator
def test_a_task_whose_scope_is_locked_returns_skipped_at_once(aws):
    Source.objects.create(account_id=ACCOUNT, regions=["us-east-1"])

    with run_lock(f"lookup:{ACCOUNT}:us-east-1"):
        assert tasks.ingest_lookup_task(ACCOUNT, "us-east-1") == "skipped"

    assert aws.requests(TARGET) == []


@pytest.mark.emulator
def test_access_denied_fails_the_task_without_a_retry_storm(aws):
    Source.objects.create(account_id=ACCOUNT, regions=["us-east-1"])
    aws.fault(TARGET, "AccessDeniedException", count=10)

    result = tasks.ingest_lookup_task.apply(args=(ACCOUNT, "us-east-1"))

    assert result.state == "FAILURE"
    assert len(aws.requests(TARGET)) == 1
    assert IngestRun.objects.get().status == "failed"


@pytest.mark.emulator
def test_throttling_beyond_the_sdk_retries_is_retried_by_celery_and_then_completes(aws):
    Source.objects.create(account_id=ACCOUNT, regions=["us-east-1"])
    aws.fault(TARGET, "ThrottlingException", count=5)  # one whole SDK attempt budget

    result = tasks.ingest_lookup_task.apply(args=(ACCOUNT, "us-east-1"))

    assert result.state == "SUCCESS" and result.result == "done"
    assert list(IngestRun.objects.order_by("id").values_list("status", flat=True)) == ["failed", "succeeded"]
    # Beyond the five injected faults, a call bunched by machine load may meet the 2/s limit.
    assert len(aws.requests(TARGET)) - aws.control("cloudtrail/throttled").get(f"{ACCOUNT}/us-east-1", 0) == 6


def test_workers_close_database_connections_around_every_task():
    # Celery's Django fixup closes every connection on task_prerun and task_postrun in a worker,
    # which is what survives a database restart between tasks; it must stay switched on.
    from celery.fixups.django import DjangoFixup

    fixup = next(f for f in app._fixups if isinstance(f, DjangoFixup))
    assert fixup.worker_fixup.on_task_prerun and fixup.worker_fixup.on_task_postrun
