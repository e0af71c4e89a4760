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
    run = ingest.ingest_iam(source)
    if run is not None and run.status == run.Status.SUCCEEDED:
        analyse_account.delay(run.account_id)


@shared_task
def analyse_account(account_id: str) -> None:
    """Who can use each key of the account, after IAM or the inventory changed; then the findings."""
    from inventory.tasks import recompute_findings

    from . import analysis

    if analysis.analyse_account(account_id) is None:
        # Another analysis is running and may have read before our change committed: go again later.
        analyse_account.apply_async((account_id,), countdown=60)
        return
    recompute_findings.delay()
