"""Cost Explorer ingestion on a schedule (settings' beat: every 8 hours)."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError
from celery import shared_task
from django.db import OperationalError

from . import services
from .explorer import CostExplorerThrottled


# Each attempt costs money: a few retries with backoff, never an endless loop. The run replaces
# its window, so a retried or duplicated task leaves the same data behind.
@shared_task(
    autoretry_for=(CostExplorerThrottled, BotoCoreError, OperationalError),
    retry_backoff=60,
    retry_jitter=True,
    max_retries=3,
)
def ingest_costs() -> int:
    return services.ingest_costs(via="task").pk
