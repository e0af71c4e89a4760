"""Thin Celery tasks: fan out per (account, region), call the service (which takes the run lock)."""

from __future__ import annotations

import logging

from celery import shared_task

from audits.models import Source

from . import findings, services

log = logging.getLogger(__name__)


@shared_task
def schedule_inventory() -> int:
    scopes = Source.objects.regions()
    for source, region in scopes:
        inventory_region.delay(source.pk, region)
    return len(scopes)


@shared_task
def inventory_region(source_id: int, region: str) -> None:
    source = Source.objects.filter(pk=source_id, enabled=True).first()
    if source is None:
        return
    if services.ingest_keys(source, region) is None:  # already running elsewhere
        return
    # After the keys: the references resolve aliases through the inventory just stored.
    references_region.delay(source.pk, region)
    recompute_findings.delay()
    # Who can use the keys depends on their policies and grants: the access analysis (which
    # recomputes the findings again once it is done).
    from access.tasks import analyse_account

    analyse_account.delay(source.account_id)


@shared_task
def references_region(source_id: int, region: str) -> None:
    from audits.models import Source

    from . import services

    source = Source.objects.filter(pk=source_id, enabled=True).first()
    if source is not None:
        services.refresh_references(source, region)


@shared_task
def recompute_findings() -> None:
    if findings.recompute() is None:
        # The running recompute may have read before our inventory committed: go again later.
        recompute_findings.apply_async(countdown=60)
