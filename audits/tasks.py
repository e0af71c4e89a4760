"""Celery tasks for CloudTrail ingestion: thin wrappers around audits.services.

Messages carry only (account, region), or an S3 pass's run id; every bit of progress lives in the database (checkpoint,
ledger, processed objects), so a lost, duplicated or redelivered message is harmless. acks_late
and reject_on_worker_lost are global settings: a task whose worker dies is delivered again and
re-reads its window from the start.

Database connections: Celery's Django fixup closes every connection before and after each task
(task_prerun/task_postrun), which also covers a database restart between tasks.
"""

from __future__ import annotations

import logging

from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from alerts.tasks import evaluate_alerts
from audits import partitions, retention
from audits.models import IngestRun
from audits.services import read_s3_claims, run_scope, scopes
from audits.sources import s3
from audits.sources.lookup import Throttled

logger = logging.getLogger(__name__)

# Transient only: an AccessDenied or a validation error would fail the same way again.
TRANSIENT = (
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
    OperationalError,
    InterfaceError,
    Throttled,
)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": True, "retry_jitter": True, "max_retries": 5}


@shared_task(ignore_result=True)
def schedule_lookup() -> int:
    pairs = scopes(IngestRun.Kind.LOOKUP)
    for account_id, region in pairs:
        ingest_lookup_task.delay(account_id, region)
    return len(pairs)


@shared_task(ignore_result=True)
def schedule_s3() -> int:
    pairs = scopes(IngestRun.Kind.S3)
    for account_id, region in pairs:
        ingest_s3_task.delay(account_id, region)
    return len(pairs)


@shared_task(**RETRY)
def ingest_lookup_task(account_id: str, region: str) -> str:
    return _evaluate_if_new(run_scope(IngestRun.Kind.LOOKUP, account_id, region)).status


@shared_task(**RETRY)
def ingest_s3_task(account_id: str, region: str) -> str:
    """List the scope's S3 pass and fan its objects out to read_s3_claims_task."""
    return _evaluate_if_new(run_scope(IngestRun.Kind.S3, account_id, region, fan_out=True)).status


@shared_task(bind=True, **RETRY)
def read_s3_claims_task(self, run_id: int) -> str:
    """Read claims of an S3 pass until none is left to take; the reader settling the last closes it.

    The lease owner is the task's id: a redelivered or retried execution takes its own leases back
    at once. Half the soft time limit bounds one execution; it queues another reader if claims remain."""
    owner = self.request.id or s3.reader_name()  # no id when called in place (eager, tests)
    budget = settings.CELERY_TASK_SOFT_TIME_LIMIT / 2
    return _evaluate_if_new(read_s3_claims(run_id, owner, budget_seconds=budget)).status


def _evaluate_if_new(result):
    """Queue an alert evaluation after a run that added events: alerts follow within one cycle."""
    if result.counts is not None and result.counts.events_new:
        try:
            evaluate_alerts.delay()
        except Exception:  # the events are in; beat's own evaluation (every 5 minutes) judges them
            logger.warning("could not queue an alert evaluation", exc_info=True)
    return result


@shared_task(**RETRY)
def ensure_event_partitions() -> int:
    """PostgreSQL with partitioned events: the day partitions of the coming week (a no-op otherwise)."""
    return len(partitions.ensure())


@shared_task(**RETRY)
def purge_events() -> int:
    """Retention (KMSDASH_EVENT_RETENTION_DAYS): a no-op when off; one purge at a time."""
    return retention.purge_events().events  # 0 when another purge holds the lock
