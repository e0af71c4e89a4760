"""Thin Celery tasks: fan out per (account, region), take a lock, call the service."""

from __future__ import annotations

import logging

from celery import shared_task

from kmsdash.locks import run_lock

log = logging.getLogger(__name__)


@shared_task
def schedule_inventory() -> int:
    from audits.models import Source

    scopes = Source.objects.regions()
    for source, region in scopes:
        inventory_region.delay(source.pk, region)
    return len(scopes)


@shared_task
def inventory_region(source_id: int, region: str) -> None:
    from audits.models import Source

    from . import services

    source = Source.objects.filter(pk=source_id, enabled=True).first()
    if source is None:
        return
    with run_lock(f"inventory:{source.account_id}:{region}") as acquired:
        if not acquired:
            log.info("inventory already running", extra={"account_id": source.account_id, "region": region})
            return
        services.ingest_keys(source, region)
    recompute_findings.delay()


@shared_task
def recompute_findings() -> None:
    from . import findings

    with run_lock("inventory:findings") as acquired:
        if acquired:
            findings.recompute()
        else:
            # The running recompute may have read before our inventory committed: go again later.
            recompute_findings.apply_async(countdown=60)
