"""Celery task for alert delivery: queued by notify_alert and run by beat every minute.

It takes no arguments and holds no lock: every bit of state is in the database, claimed row by
row with a lease (notify/delivery.py), so duplicated, lost or concurrent runs are harmless.
"""

from __future__ import annotations

from celery import shared_task

from .delivery import deliver_pending


@shared_task(ignore_result=True)
def deliver_alerts() -> int:
    return deliver_pending().claimed
