"""Source-level services: register a Source, and run one ingestion pass over one (account, region).

The Celery tasks and the management commands call these, so a scheduled run and a manual run
behave the same way: same lock, same windows, same ledger.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import boto3
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audits.cloudtrail import ACCOUNT_RE, REGION_RE
from audits.ingest import Counts
from audits.models import AlertCandidate, Event, IngestRun, Source
from audits.rollups import KEY, keyed
from audits.sources.lookup import ingest_lookup
from audits.sources.s3 import ingest_s3
from kmsdash.locks import run_lock

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
    # "skipped" (the lock is held elsewhere); "missing" (no such enabled source and region).
    status: str
    runs: int = 0
    counts: Counts | None = None


def run_scope(
    kind: str, account_id: str, region: str, *, since: datetime | None = None, until: datetime | None = None
) -> ScopeResult:
    """One pass of `kind` over (account, region), under the scope's run lock.

    If another worker holds the lock the pass is skipped, not queued: that worker is already
    doing the same work, and the next schedule tick comes soon.
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
        result = ingest_s3(source, region, since=since, until=until)
        status = "incomplete" if result.deferred else "done"
        return ScopeResult(kind, account_id, region, status, runs=1, counts=result.counts)


def close_interrupted_runs(kind: str, account_id: str, region: str) -> int:
    """Ledger rows still 'running' for a scope whose lock we hold belong to a dead worker."""
    return IngestRun.objects.filter(
        kind=kind, account_id=account_id, region=region, status=IngestRun.Status.RUNNING
    ).update(
        status=IngestRun.Status.FAILED,
        error="Interrupted: the worker stopped before the run finished.",
        finished_at=timezone.now(),
    )


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
