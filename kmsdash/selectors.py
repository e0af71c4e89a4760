"""Reads for the admin pages: ingestion health and the export audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from audits.models import Checkpoint, IngestRun, Quarantine, Retention, Source

from .models import ExportAudit

# A scheduled source runs every 5 minutes and reads up to 5 minutes behind: half an hour behind
# means several runs in a row did not move it.
LAG_WARNING = timedelta(minutes=30)
QUARANTINE_RECENT = timedelta(days=7)
# Local file imports are run by hand: their age says nothing about health.
SCHEDULED_KINDS = (IngestRun.Kind.LOOKUP, IngestRun.Kind.S3)


@dataclass
class ScopeHealth:
    kind: str
    account_id: str
    region: str
    last_run: IngestRun | None
    last_success_at: datetime | None
    last_failure: IngestRun | None
    high_watermark: datetime | None
    lag: timedelta | None

    @property
    def kind_label(self) -> str:
        return IngestRun.Kind(self.kind).label if self.kind in IngestRun.Kind.values else self.kind

    @property
    def lag_text(self) -> str:
        if self.lag is None:
            return ""
        minutes = max(int(self.lag.total_seconds() // 60), 0)
        days, minutes = divmod(minutes, 24 * 60)
        hours, minutes = divmod(minutes, 60)
        if days:
            return f"{days} d {hours} h"
        if hours:
            return f"{hours} h {minutes} min"
        return f"{minutes} min"

    @property
    def failing(self) -> bool:
        return self.last_run is not None and self.last_run.status == IngestRun.Status.FAILED

    @property
    def lagging(self) -> bool:
        if self.kind not in SCHEDULED_KINDS:
            return False
        return self.lag is None or self.lag > LAG_WARNING

    @property
    def warning(self) -> bool:
        return self.failing or self.lagging


def ingestion_health(now: datetime | None = None) -> list[ScopeHealth]:
    """One row per (source kind, account, region) that has run, has a checkpoint, or is configured.

    Lag is now minus the checkpoint's high watermark (how far behind the data is), or, for a
    source without checkpoints, now minus the end of its last successful run.
    """
    now = now or timezone.now()
    same_scope = IngestRun.objects.filter(
        kind=OuterRef("kind"), account_id=OuterRef("account_id"), region=OuterRef("region")
    ).order_by("-started_at", "-id")
    per_scope = (
        IngestRun.objects.order_by()
        .values("kind", "account_id", "region")
        .distinct()
        .annotate(
            last_run_id=Subquery(same_scope.values("id")[:1]),
            last_failure_id=Subquery(same_scope.filter(status=IngestRun.Status.FAILED).values("id")[:1]),
            last_success_at=Subquery(same_scope.filter(status=IngestRun.Status.SUCCEEDED).values("finished_at")[:1]),
        )
    )
    rows = {(r["kind"], r["account_id"], r["region"]): r for r in per_scope}
    run_ids = {r[name] for r in rows.values() for name in ("last_run_id", "last_failure_id") if r[name]}
    runs = IngestRun.objects.in_bulk(run_ids)
    watermarks = {(c.kind, c.account_id, c.region): c.high_watermark for c in Checkpoint.objects.all()}

    scopes = set(rows) | set(watermarks)
    for source in Source.objects.filter(enabled=True):
        for region in source.regions or []:
            if source.lookup_enabled:
                scopes.add((IngestRun.Kind.LOOKUP.value, source.account_id, region))
            if source.has_s3:
                scopes.add((IngestRun.Kind.S3.value, source.account_id, region))

    health = []
    for scope in sorted(scopes):
        row = rows.get(scope, {})
        last_success_at = row.get("last_success_at")
        high_watermark = watermarks.get(scope)
        reference = high_watermark or last_success_at
        health.append(
            ScopeHealth(
                kind=scope[0],
                account_id=scope[1],
                region=scope[2],
                last_run=runs.get(row.get("last_run_id")),
                last_success_at=last_success_at,
                last_failure=runs.get(row.get("last_failure_id")),
                high_watermark=high_watermark,
                lag=(now - reference) if reference else None,
            )
        )
    return health


def recent_quarantine_count(now: datetime | None = None) -> int:
    since = (now or timezone.now()) - QUARANTINE_RECENT
    return Quarantine.objects.filter(created_at__gte=since).count()


@dataclass
class RetentionStatus:
    days: int  # 0: all events kept
    mark: Retention | None  # None before the first purge


def retention() -> RetentionStatus:
    return RetentionStatus(settings.KMSDASH_EVENT_RETENTION_DAYS, Retention.objects.order_by("pk").first())


def sources() -> QuerySet[Source]:
    return Source.objects.all()


def export_audits() -> QuerySet[ExportAudit]:
    return ExportAudit.objects.order_by("-created_at", "-id")
