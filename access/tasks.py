"""Thin Celery tasks: fan out per configured account, call the service (which takes the run lock)."""

from __future__ import annotations

from celery import shared_task


@shared_task
def schedule_iam() -> int:
    from audits.models import Source

    ids = list(Source.objects.filter(enabled=True).values_list("pk", flat=True))
    for source_id in ids:
        ingest_iam_account.delay(source_id)
    return len(ids)


@shared_task
def ingest_iam_account(source_id: int) -> None:
    from audits.models import Source

    from . import ingest

    source = Source.objects.filter(pk=source_id, enabled=True).first()
    if source is None:
        return
    ingest.ingest_iam(source)
