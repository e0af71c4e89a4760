"""Source-level services: register a Source, and run one ingestion pass over one (account, region).

The Celery tasks and the management commands call these, so a scheduled run and a manual run
behave the same way: same lock, same windows, same ledger.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import boto3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audits.cloudtrail import ACCOUNT_RE, REGION_RE
from audits.ingest import Counts, finish_run
from audits.models import AlertCandidate, Event, IngestRun, ObjectClaim, Source
from audits.rollups import KEY, keyed
from audits.sources import s3
from audits.sources.lookup import ingest_lookup
from audits.sources.s3 import ingest_s3
from kmsdash import totals
from kmsdash.locks import run_lock

logger = logging.getLogger(__name__)

ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
EXTERNAL_ID_RE = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ORG_ID_RE = re.compile(r"^o-[a-z0-9]{10,32}$")
KINDS = (IngestRun.Kind.LOOKUP, IngestRun.Kind.S3)


@cache
def known_regions() -> frozenset[str]:
    """Every CloudTrail region botocore knows, in every partition."""
    session = boto3.Session()
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("cloudtrail", partition_name=partition)
    )


def clean_regions(regions: list[str]) -> list[str]:
    cleaned = list(dict.fromkeys(r.strip() for r in regions if r.strip()))
    if not cleaned:
        raise ValidationError("At least one region is needed.")
    unknown = [r for r in cleaned if not REGION_RE.match(r) or r not in known_regions()]
    if unknown:
        raise ValidationError(f"Unknown AWS region(s): {', '.join(unknown)}.")
    return cleaned


def upsert_source(
    *,
    account_id: str,
    regions: list[str],
    name: str = "",
    role_arn: str = "",
    external_id: str = "",
    s3_bucket: str = "",
    s3_prefix: str = "",
    org_id: str = "",
    lookup_enabled: bool = True,
) -> tuple[Source, bool]:
    """Create or update the Source for `account_id` so it is exactly as described (idempotent)."""
    errors: list[str] = []
    if not ACCOUNT_RE.match(account_id):
        errors.append("The account id must be 12 digits.")
    try:
        regions = clean_regions(regions)
    except ValidationError as exc:
        errors.extend(exc.messages)
    if role_arn and not ROLE_ARN_RE.match(role_arn):
        errors.append("The role ARN must look like arn:aws:iam::123456789012:role/Name.")
    if external_id and not role_arn:
        errors.append("An external id only makes sense with a role ARN.")
    if external_id and not EXTERNAL_ID_RE.match(external_id):
        errors.append("The external id must be 2-1224 characters of letters, digits and +=,.@:/-.")
    if s3_bucket and not BUCKET_RE.match(s3_bucket):
        errors.append("The S3 bucket name is not valid.")
    if (s3_prefix or org_id) and not s3_bucket:
        errors.append("An S3 prefix or organization id needs an S3 bucket.")
    if org_id and not ORG_ID_RE.match(org_id):
        errors.append("The organization id must look like o-a1b2c3d4e5.")
    if errors:
        raise ValidationError(errors)
    values = {
        "name": name,
        "regions": regions,
        "role_arn": role_arn,
        "external_id": external_id,
        "s3_bucket": s3_bucket,
        "s3_prefix": s3_prefix.strip("/"),
        "org_id": org_id,
        "lookup_enabled": lookup_enabled,
        "enabled": True,
    }
    with transaction.atomic():
        source, created = Source.objects.update_or_create(account_id=account_id, defaults=values)
        source.full_clean()
    return source, created


def scopes(kind: str, *, account_id: str | None = None, region: str | None = None) -> list[tuple[str, str]]:
    """(account, region) pairs that `kind` reads: enabled sources, their regions."""
    if kind not in KINDS:
        raise ValueError(f"unknown source kind {kind!r}")
    return [
        (account, scope_region)
        for _, account, scope_region in Source.objects.scopes((kind,), account_id=account_id, region=region)
    ]


@dataclass
class ScopeResult:
    kind: str
    account_id: str
    region: str
    # "done"; "incomplete" (some S3 objects could not be read, retried next pass);
    # "skipped" (the lock is held elsewhere); "missing" (no such enabled source and region);
    # S3 read by the workers: "queued" (a pass listed, its readers queued), "resumed" (readers queued
    # again for the open pass's claims no live reader holds), "running" (live readers hold them all);
    # a reader: "reading" (it stopped with claims left to others), "settled" (the pass is closed).
    status: str
    runs: int = 0
    counts: Counts | None = None


def run_scope(
    kind: str,
    account_id: str,
    region: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    fan_out: bool = False,
) -> ScopeResult:
    """One pass of `kind` over (account, region), under the scope's run lock.

    If another worker holds the lock the pass is skipped, not queued: that worker is already
    doing the same work, and the next schedule tick comes soon. `fan_out` (S3, a scheduled pass):
    list the pass and queue read_s3_claims_task for its objects rather than reading them here.
    """
    with run_lock(f"{kind}:{account_id}:{region}") as acquired:
        if not acquired:
            return ScopeResult(kind, account_id, region, "skipped")
        if (account_id, region) not in scopes(kind, account_id=account_id, region=region):
            return ScopeResult(kind, account_id, region, "missing")
        source = Source.objects.get(account_id=account_id)
        close_interrupted_runs(kind, account_id, region)
        if kind == IngestRun.Kind.LOOKUP:
            windows = ingest_lookup(source, region, since=since, until=until)
            total = Counts()
            for window in windows:
                total += window.counts
            return ScopeResult(kind, account_id, region, "done", runs=len(windows), counts=total)
        if fan_out and since is None and until is None:
            return fan_out_s3(source, region)
        result = ingest_s3(source, region, since=since, until=until)
        if result.busy:
            return ScopeResult(kind, account_id, region, "running", counts=result.counts)
        status = "incomplete" if result.deferred else "done"
        return ScopeResult(kind, account_id, region, status, runs=1, counts=result.counts)


def fan_out_s3(source: Source, region: str) -> ScopeResult:
    """List an S3 pass and queue its readers; the caller holds the scope's run lock. While the
    scope's previous pass is open, queue readers for its claims instead (e.g. those of a worker that
    died, once their lease expired), or close it if a reader died between its last claim and that."""
    kind, account_id = IngestRun.Kind.S3, source.account_id
    pending = s3.open_run(account_id, region)
    if pending is not None:
        closed = s3.settle_run(pending.pk)
        if closed is not None:
            return ScopeResult(kind, account_id, region, "done", runs=1, counts=_run_counts(closed))
        return ScopeResult(kind, account_id, region, "resumed" if queue_readers(pending.pk) else "running")
    result = s3.list_pass(source, region)
    if result.run.status != IngestRun.Status.RUNNING:  # nothing to read: closed already
        return ScopeResult(kind, account_id, region, "done", runs=1, counts=_run_counts(result.run))
    queue_readers(result.run.pk)
    return ScopeResult(kind, account_id, region, "queued", runs=1)


def queue_readers(run_id: int) -> int:
    """Queue read_s3_claims_task for the run's claims no live reader holds: one per claim batch, at
    most KMSDASH_S3_FANOUT_TASKS. With none to take now, queue one for when the first lease expires
    (a live reader renews its leases, and that task then finds nothing). Returns how many were queued."""
    from audits.tasks import read_s3_claims_task  # the tasks module imports this one

    now = timezone.now()
    claims = ObjectClaim.objects.filter(run_id=run_id)
    free = claims.filter(s3.claimable(now)).count()
    wanted = min(settings.KMSDASH_S3_FANOUT_TASKS, -(-free // settings.KMSDASH_S3_CLAIM_BATCH))
    try:
        for _ in range(wanted):
            read_s3_claims_task.delay(run_id)
        if not wanted:
            first = claims.filter(state=ObjectClaim.State.LEASED).order_by("lease_expires").first()
            if first is not None and first.lease_expires is not None:
                wait = max((first.lease_expires - now).total_seconds(), 0) + 1
                read_s3_claims_task.apply_async((run_id,), countdown=wait)
    except Exception:  # the broker is away: the claims wait in the database for the next tick
        logger.warning("could not queue the S3 readers", extra={"run": run_id}, exc_info=True)
    return wanted


def read_s3_claims(run_id: int, owner: str, *, budget_seconds: float | None = None) -> ScopeResult:
    """One reader of a pass's claims (read_s3_claims_task); closes the pass if it settled the last."""
    run = IngestRun.objects.filter(pk=run_id, kind=IngestRun.Kind.S3).first()
    if run is None or run.status != IngestRun.Status.RUNNING:
        return ScopeResult(IngestRun.Kind.S3, run.account_id if run else "", run.region if run else "", "settled")
    if (run.account_id, run.region) not in scopes(IngestRun.Kind.S3, account_id=run.account_id, region=run.region):
        # The source (or its bucket, or the region) was removed since the listing: nothing resumes it.
        finish_run(run, _run_counts(run), status=IngestRun.Status.FAILED, error="The S3 source was removed.")
        return ScopeResult(IngestRun.Kind.S3, run.account_id, run.region, "missing")
    # Claims leased to this very owner belong to a previous execution of the same task, which died
    # (acks_late and reject_on_worker_lost redeliver it): take them back now, not at their expiry.
    s3.release_leases(run.pk, owner)
    read = s3.read_claims(run, owner, budget_seconds=budget_seconds)
    closed = s3.settle_run(run.pk)
    if closed is not None:
        status = "done" if closed.status == IngestRun.Status.SUCCEEDED else "incomplete"
        return ScopeResult(IngestRun.Kind.S3, run.account_id, run.region, status, runs=1, counts=_run_counts(closed))
    if read.stopped_early:  # a task's time limit bounds it: another reader goes on
        queue_readers(run.pk)
    return ScopeResult(IngestRun.Kind.S3, run.account_id, run.region, "reading")


def _run_counts(run: IngestRun) -> Counts:
    return Counts(**{name: getattr(run, name) for name in Counts().as_dict()})


def close_interrupted_runs(kind: str, account_id: str, region: str) -> int:
    """Ledger rows still 'running' for a scope whose lock we hold belong to a dead worker, except an
    S3 pass with claims: its readers work without the lock, and it is resumed (fan_out_s3).

    The UPDATE's count is the rows it moved: a run that its worker closes at the same moment
    (finish_run holds the row's lock) is re-checked once that commits, and left out if no longer
    running, so the totals move each run once."""
    with transaction.atomic():
        closed = IngestRun.objects.filter(
            kind=kind, account_id=account_id, region=region, status=IngestRun.Status.RUNNING, claims__isnull=True
        ).update(
            status=IngestRun.Status.FAILED,
            error="Interrupted: the worker stopped before the run finished.",
            finished_at=timezone.now(),
        )
        if closed:
            # A dead worker's committed batches were counted as they committed; only the status moves.
            totals.add_many(
                {
                    totals.key(totals.RUNS, source=kind, status=IngestRun.Status.RUNNING): -closed,
                    totals.key(totals.RUNS, source=kind, status=IngestRun.Status.FAILED): closed,
                }
            )
    return closed


@transaction.atomic
def reattribute_alias(account_id: str, region: str, *, alias_name: str, alias_arn: str, key_arn: str) -> int:
    """Point the events recorded under an alias at its key, and merge their rows of every table with a
    key dimension (audits/rollups.py) into the key's rows, in one transaction. Returns the number of
    events moved; a second call finds nothing left under the alias.

    An alias name means the alias in the caller's own (account, region); an alias ARN is global."""
    under_alias = Q(key=alias_arn) | Q(key=alias_name, account_id=account_id, region=region)
    rollup, *summaries = keyed()
    # The rollup rows are locked before the events move, as an ingest batch writes events first.
    rollup_rows = list(rollup.model._default_manager.select_for_update().filter(under_alias).order_by("id"))
    moved = Event.objects.filter(
        Q(key=alias_arn) | Q(key=alias_name, recipient_account_id=account_id, region=region)
    ).update(key=key_arn)
    # Alert candidates not judged yet move with their events (groups of one key may then repeat:
    # evaluation sums them).
    AlertCandidate.objects.filter(under_alias).update(key=key_arn)
    _merge_into_key(rollup, rollup_rows, key_arn)
    for summary in summaries:
        _merge_into_key(
            summary, summary.model._default_manager.select_for_update().filter(under_alias).order_by("id"), key_arn
        )
    return moved


def _merge_into_key(summary, rows, key_arn: str) -> None:
    """Each row joins the key's row with the same other dimensions, or becomes it."""
    model = summary.model
    dims = [name for name in summary.dim_names if name != KEY.column]
    for row in rows:
        into = model.objects.select_for_update().filter(key=key_arn, **{n: getattr(row, n) for n in dims}).first()
        if into is None:
            row.key = key_arn
            row.save(update_fields=["key"])
            continue
        for name in summary.count_names:
            setattr(into, name, getattr(into, name) + getattr(row, name))
        into.first_seen = min(into.first_seen, row.first_seen)
        into.last_seen = max(into.last_seen, row.last_seen)
        into.save(update_fields=[*summary.count_names, "first_seen", "last_seen"])
        row.delete()
