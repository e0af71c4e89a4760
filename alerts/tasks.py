"""Celery task for alert evaluation: a thin wrapper around alerts.services.evaluate.

No arguments: everything it needs (the watermark) is in the database, so a duplicated or
redelivered message only finds nothing new; a second one running at once is skipped by the lock.
"""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from alerts.services import evaluate

RETRY = {"autoretry_for": (OperationalError, InterfaceError), "retry_backoff": True, "max_retries": 5}


@shared_task(ignore_result=True, **RETRY)
def evaluate_alerts() -> str:
    return evaluate().status
