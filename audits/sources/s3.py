"""CloudTrail log files in S3 for one (source, region).

Each pass lists the day folders `[prefix/]AWSLogs/[org-id/]<account>/CloudTrail/<region>/YYYY/MM/DD/`
from the day of the last complete pass, KMSDASH_S3_LOOKBACK_DAYS further back (CloudTrail
redelivers late files for up to 30 days, and a file's name carries its delivery time, never its
events' times), up to today. The ledger (ProcessedObject: bucket, key, ETag) makes a re-run skip
what it already read; a rewritten object has a new ETag and is read again, its events deduplicated.

An object is streamed (bounded memory whatever its size) through iter_file_records. A record in it
that no parser reads, or one too large, is quarantined alone and the object is still marked
processed. A truncated or corrupt object is tried KMSDASH_OBJECT_ATTEMPTS times, then quarantined
and not marked processed (its whole records before the fault land); the other objects still land.

A pass lists into ObjectClaim rows (one per object still to read) and its objects are read through
them, by this process (ingest_s3: a command, a backfill) or by many Celery workers (a scheduled
pass: read_claims in read_s3_claims_task); see "a pass: listing, claims, settling" below.

Throughput: while one object is parsed, the next PREFETCH objects (those up to PREFETCH_MAX_BYTES)
are downloaded by a small thread pool, because a GetObject waits tens of milliseconds for its first
byte, longer than parsing a typical log file takes. Objects share the Ingestor's batches, written
by a background writer, and an object's ledger row is committed with its last records.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from audits.ingest import Counts, Ingestor, advance_checkpoint, bulk_gc, describe_error, finish_run, start_run
from audits.models import Checkpoint, IngestRun, ObjectClaim, ProcessedObject, Quarantine, Source
from audits.sources.files import FileError, iter_file_records
from kmsdash import aws

logger = logging.getLogger(__name__)

# Reading an object can fail half-way for reasons that a second read fixes.
STREAM_ERRORS = (
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
UNREADABLE = "Unreadable log file"
PREFETCH = 4
# Larger objects are streamed when their turn comes, so prefetching holds at most 4 x 16 MiB.
PREFETCH_MAX_BYTES = 16 * 1024 * 1024
SKIPPED_FOLDERS = ("/CloudTrail-Digest/", "/CloudTrail-Insight/")


@dataclass
class S3Result:
    run: IngestRun
    counts: Counts = field(default_factory=Counts)
    listed: int = 0
    processed: int = 0
    skipped: int = 0
    quarantined_files: int = 0
    deferred: int = 0
    deferred_because: str = ""  # the first deferral's reason, for the run ledger
    stopped_early: bool = False  # read_claims: its time budget ran out with claims left
    busy: bool = False  # ingest_s3: another reader still holds claims of the scope's open pass


def day_prefix(source: Source, region: str, day: date) -> str:
    base = f"{source.s3_prefix.strip('/')}/" if source.s3_prefix.strip("/") else ""
    org = f"{source.org_id}/" if source.org_id else ""
    return f"{base}AWSLogs/{org}{source.account_id}/CloudTrail/{region}/{day:%Y/%m/%d}/"


def days_to_list(
    last_pass: datetime | None, now: datetime, *, since: datetime | None = None, until: datetime | None = None
) -> list[date]:
    if since is not None or until is not None:
        first = (since or now - timedelta(days=settings.KMSDASH_S3_INITIAL_DAYS)).date()
        last = min(until or now, now).date()
    else:
        anchor = last_pass if last_pass is not None else now - timedelta(days=settings.KMSDASH_S3_INITIAL_DAYS)
        first = anchor.date() - timedelta(days=settings.KMSDASH_S3_LOOKBACK_DAYS)
        last = now.date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def list_objects(s3: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith("/") or any(folder in f"/{key}" for folder in SKIPPED_FOLDERS):
                continue
            yield obj


def object_location(bucket: str, key: str, etag: str) -> str:
    return f"s3://{bucket}/{key}#{etag}"


def open_object(s3: Any, bucket: str, obj: dict[str, Any]) -> Any:
    """The streaming body of a listed object."""
    # IfMatch: read exactly the version that was listed; a rewrite is read on the next pass.
    return s3.get_object(Bucket=bucket, Key=obj["Key"], IfMatch=obj["ETag"])["Body"]


def fetch_object(s3: Any, bucket: str, obj: dict[str, Any]) -> bytes:
    body = open_object(s3, bucket, obj)
    try:
        return body.read()
    finally:
        body.close()


def prefetched(s3: Any, bucket: str, objects: Iterable[dict[str, Any]]) -> Iterator[tuple[dict, Future | None]]:
    """Each object with the download of its body started PREFETCH objects ahead (None for a large one)."""
    with ThreadPoolExecutor(PREFETCH, thread_name_prefix="s3-prefetch") as pool:
        ahead: list[tuple[dict, Future | None]] = []
        for obj in objects:
            # An object over the size limit is quarantined unread, so it is never fetched either.
            small = obj.get("Size", 0) <= min(PREFETCH_MAX_BYTES, settings.KMSDASH_MAX_COMPRESSED_BYTES)
            ahead.append((obj, pool.submit(fetch_object, s3, bucket, obj) if small else None))
            if len(ahead) > PREFETCH:
                yield ahead.pop(0)
        yield from ahead


def ingest_object(
    s3: Any, bucket: str, obj: dict[str, Any], ingestor: Ingestor, result: S3Result, fetched: Future | None = None
) -> tuple[str, str, bool]:
    """Read one object into the ingestor; `fetched`: its body being downloaded already (first attempt).

    Returns how its claim settles: (state, reason, retry), retry when the next pass reads it again."""
    key, etag = obj["Key"], obj["ETag"].strip('"')
    location = object_location(bucket, key, etag)
    if obj.get("Size", 0) > settings.KMSDASH_MAX_COMPRESSED_BYTES:
        limit = settings.KMSDASH_MAX_COMPRESSED_BYTES
        reason = f"{UNREADABLE}: {obj['Size']} bytes, over the {limit}-byte limit"
        ingestor.quarantine(location=location, reason=reason)
        result.quarantined_files += 1
        return ObjectClaim.State.FAILED, reason, False
    error: BaseException | None = None
    for attempt in range(settings.KMSDASH_OBJECT_ATTEMPTS):
        records = 0
        try:
            if attempt == 0 and fetched is not None:
                body = io.BytesIO(fetched.result())  # raises what the download raised
            else:
                body = open_object(s3, bucket, obj)
            try:
                for record in iter_file_records(body, name=key):
                    ingestor.add(record, location=location)
                    records += 1
            finally:
                body.close()
        except (FileError, *STREAM_ERRORS) as exc:
            error = exc
            continue
        except ClientError as exc:
            # One object's error never stops the others: a lifecycle rule may archive a single log
            # file, a bucket policy or KMS key may deny some. Errors about the bucket itself come
            # from the listing, which does abort the pass.
            code = aws.error_code(exc)
            if code == "InvalidObjectState":  # archived (Glacier): no retry can read it
                reason = f"{UNREADABLE}: archived ({code}); restore it and delete this row to read it"
                ingestor.quarantine(location=location, reason=reason)
                result.quarantined_files += 1
                return ObjectClaim.State.FAILED, reason, False
            # Changed or deleted since it was listed, denied, or a server error: read on the next pass.
            if code not in ("PreconditionFailed", "NoSuchKey", "404", "412"):
                logger.warning("S3 object deferred", extra={"bucket": bucket, "key": key, "code": code})
            reason = f"{code or 'ClientError'} on s3://{bucket}/{key}"
            result.deferred += 1
            result.deferred_because = result.deferred_because or reason
            return ObjectClaim.State.FAILED, reason, True
        # Saved with the batch holding its last records: the object is done once they are committed.
        ingestor.done(ProcessedObject(bucket=bucket, key=key, etag=etag, records=records))
        result.processed += 1
        return ObjectClaim.State.DONE, "", False
    if isinstance(error, FileError):
        reason = f"{UNREADABLE} after {settings.KMSDASH_OBJECT_ATTEMPTS} attempts: {error}"
        ingestor.quarantine(location=location, reason=reason)
        ingestor.flush()
        result.quarantined_files += 1
        return ObjectClaim.State.FAILED, reason, False
    logger.warning("S3 object deferred after read errors", extra={"bucket": bucket, "key": key})
    reason = f"{type(error).__name__} on s3://{bucket}/{key}"
    result.deferred += 1
    result.deferred_because = result.deferred_because or reason
    return ObjectClaim.State.FAILED, reason, True


# --- a pass: listing, claims, settling ---------------------------------------------------------------
#
# A pass lists the scope's day folders and makes one ObjectClaim per object still to read, with the
# run. Readers (this process for a pass run in place; up to KMSDASH_S3_FANOUT_TASKS Celery tasks for
# a scheduled one) take KMSDASH_S3_CLAIM_BATCH claims at a time and read them; the claim of an object
# is settled in the transaction that commits its last records. The reader that settles the last claim
# closes the run and moves the checkpoint. A reader that dies leaves its claims leased: they are
# taken again when their lease expires (KMSDASH_S3_LEASE_SECONDS), or at once by the same Celery
# task redelivered. Reading an object twice stores nothing twice (events are deduplicated on their
# key), so an expired lease can never double a count.


def reader_name() -> str:
    """A lease owner for a reader that is not a Celery task: unique to this call."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def open_run(account_id: str, region: str) -> IngestRun | None:
    """The scope's S3 pass whose claims are still being read, if any (at most one: a pass is listed
    under the scope's run lock, and only when none is open)."""
    return (
        IngestRun.objects.filter(
            Exists(ObjectClaim.objects.filter(run=OuterRef("pk"))),
            kind=IngestRun.Kind.S3,
            account_id=account_id,
            region=region,
            status=IngestRun.Status.RUNNING,
        )
        .order_by("pk")
        .first()
    )


def list_pass(
    source: Source,
    region: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> S3Result:
    """List (source, region)'s objects still to read into a new run and its claims; the caller holds
    the scope's run lock. A pass with nothing to read is closed at once."""
    now = now or timezone.now()
    bucket = source.s3_bucket
    watermark = Checkpoint.objects.watermark(IngestRun.Kind.S3, source.account_id, region)
    days = days_to_list(watermark, now, since=since, until=until)
    row = start_run(
        IngestRun.Kind.S3,
        account_id=source.account_id,
        region=region,
        window_start=datetime.combine(days[0], datetime.min.time(), tzinfo=UTC) if days else None,
        window_end=now,
    )
    result = S3Result(run=row)
    try:
        s3 = aws.client("s3", region, source=source)
        claims = []
        for day in days:
            listed = list(list_objects(s3, bucket, day_prefix(source, region, day)))
            result.listed += len(listed)
            done = set(
                ProcessedObject.objects.filter(bucket=bucket, key__in=[obj["Key"] for obj in listed]).values_list(
                    "key", "etag"
                )
            )
            given_up = set(
                Quarantine.objects.filter(
                    location__in=[object_location(bucket, obj["Key"], obj["ETag"].strip('"')) for obj in listed],
                    reason__startswith=UNREADABLE,
                ).values_list("location", flat=True)
            )
            for obj in listed:
                etag = obj["ETag"].strip('"')
                if (obj["Key"], etag) in done or object_location(bucket, obj["Key"], etag) in given_up:
                    result.skipped += 1
                else:
                    claims.append(
                        ObjectClaim(run=row, bucket=bucket, key=obj["Key"], etag=obj["ETag"], size=obj.get("Size", 0))
                    )
        # A backfill (--since/--until) never moves the checkpoint; a regular pass moves it to `now`.
        row.checkpoint_to = None if since is not None or until is not None else now
        with transaction.atomic():
            row.save(update_fields=["checkpoint_to"])
            ObjectClaim.objects.bulk_create(claims, batch_size=1000)
    except BaseException as exc:
        try:
            finish_run(row, Counts(), status=IngestRun.Status.FAILED, error=describe_error(exc))
        except Exception:  # e.g. the database went away: the original error matters more
            logger.exception("could not record the failed run", extra={"run": row.pk})
        raise
    if not claims:
        settle_run(row.pk)
        row.refresh_from_db()
    return result


def claimable(now: datetime) -> Q:
    return Q(state=ObjectClaim.State.PENDING) | Q(state=ObjectClaim.State.LEASED, lease_expires__lt=now)


def claim_batch(run_id: int, owner: str, size: int | None = None) -> list[ObjectClaim]:
    """Lease up to `size` (KMSDASH_S3_CLAIM_BATCH) of the run's claims no live reader holds, oldest first.

    On PostgreSQL the rows are locked with SKIP LOCKED, so concurrent readers take disjoint batches
    without waiting for each other. SQLite has no row locks and runs one writer at a time: the UPDATE
    repeats the condition, and only the rows it leased to `owner` are returned, so two readers still
    never share a claim."""
    size = size or settings.KMSDASH_S3_CLAIM_BATCH
    now = timezone.now()
    expires = now + timedelta(seconds=settings.KMSDASH_S3_LEASE_SECONDS)
    with transaction.atomic():
        ids = list(
            ObjectClaim.objects.select_for_update(skip_locked=True)
            .filter(claimable(now), run_id=run_id)
            .order_by("pk")
            .values_list("pk", flat=True)[:size]
        )
        if not ids:
            return []
        ObjectClaim.objects.filter(claimable(now), pk__in=ids).update(
            state=ObjectClaim.State.LEASED, lease_owner=owner, lease_expires=expires, attempts=F("attempts") + 1
        )
        return list(
            ObjectClaim.objects.filter(
                pk__in=ids, state=ObjectClaim.State.LEASED, lease_owner=owner, lease_expires=expires
            ).order_by("pk")
        )


def renew_leases(run_id: int, owner: str) -> int:
    expires = timezone.now() + timedelta(seconds=settings.KMSDASH_S3_LEASE_SECONDS)
    return ObjectClaim.objects.filter(run_id=run_id, state=ObjectClaim.State.LEASED, lease_owner=owner).update(
        lease_expires=expires
    )


def release_leases(run_id: int, owner: str) -> int:
    """Give `owner`'s unsettled claims back to the other readers at once (its reading stopped)."""
    return ObjectClaim.objects.filter(run_id=run_id, state=ObjectClaim.State.LEASED, lease_owner=owner).update(
        state=ObjectClaim.State.PENDING, lease_owner="", lease_expires=None
    )


def settle_claim(claim_id: int, owner: str, state: str, reason: str = "", retry: bool = False):
    """The update settling a claim, for the batch transaction that commits the object's last records.
    Only while `owner` still holds it: after an expired lease the reader that took it settles it."""

    def update() -> None:
        ObjectClaim.objects.filter(pk=claim_id, state=ObjectClaim.State.LEASED, lease_owner=owner).update(
            state=state, reason=reason[:4000], retry=retry, lease_expires=None
        )

    return update


@bulk_gc()
def read_claims(run: IngestRun, owner: str, *, budget_seconds: float | None = None) -> S3Result:
    """Read the run's claims as `owner` until none is left to take (or `budget_seconds` have passed:
    `result.stopped_early`). When the reading stops on an error, what was read is still written, the
    claims not settled go back to the other readers, and the error goes on up."""
    result = S3Result(run=run)
    bucket = ObjectClaim.objects.filter(run=run).values_list("bucket", flat=True).first()
    if bucket is None:
        return result
    source = Source.objects.get(account_id=run.account_id)
    s3 = aws.client("s3", run.region, source=source)
    ingestor = Ingestor(run, background_writes=True)
    result.counts = ingestor.counts
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    renew_every = settings.KMSDASH_S3_LEASE_SECONDS / 3

    def claimed() -> Iterator[dict[str, Any]]:
        renewed = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            batch = claim_batch(run.pk, owner)
            if not batch:
                return
            for claim in batch:
                # Advanced once per object read (prefetched() keeps PREFETCH ahead): a reader that
                # is alive keeps its leases however long its batch takes.
                if time.monotonic() - renewed > renew_every:
                    renew_leases(run.pk, owner)
                    renewed = time.monotonic()
                yield {"Key": claim.key, "ETag": claim.etag, "Size": claim.size, "claim": claim.pk}
        result.stopped_early = True

    try:
        for obj, fetched in prefetched(s3, bucket, claimed()):
            state, reason, retry = ingest_object(s3, bucket, obj, ingestor, result, fetched)
            ingestor.done(settle_claim(obj["claim"], owner, state, reason, retry))
        ingestor.flush()
    except BaseException:
        try:
            ingestor.flush()
        except Exception:
            logger.exception("could not write what was read", extra={"run": run.pk})
        try:
            release_leases(run.pk, owner)
        except Exception:  # e.g. the database went away: the leases expire instead
            logger.exception("could not release the claims", extra={"run": run.pk})
        raise
    return result


def settle_run(run_id: int) -> IngestRun | None:
    """Close the run once every claim is settled; returns it if this call closed it.

    Every object done or quarantined: the run succeeds and moves the checkpoint to checkpoint_to
    (advance_checkpoint: never backwards, never past a gap). An object to read again (retry): the
    run fails and the checkpoint stays, as for a pass read in one process."""
    with transaction.atomic():
        run = IngestRun.objects.select_for_update().filter(pk=run_id, status=IngestRun.Status.RUNNING).first()
        if run is None:
            return None
        claims = ObjectClaim.objects.filter(run=run)
        if claims.filter(state__in=[ObjectClaim.State.PENDING, ObjectClaim.State.LEASED]).exists():
            return None
        run.files = claims.filter(state=ObjectClaim.State.DONE).count()
        IngestRun.objects.filter(pk=run.pk).update(files=run.files)
        run.refresh_from_db()
        counts = Counts(**{name: getattr(run, name) for name in Counts().as_dict()})
        retry = claims.filter(state=ObjectClaim.State.FAILED, retry=True).order_by("pk")
        if retry.exists():
            error = f"{retry.count()} object(s) could not be read and will be retried (first: {retry[0].reason})"
            finish_run(run, counts, status=IngestRun.Status.FAILED, error=error)
        else:
            finish_run(run, counts)
            if run.checkpoint_to is not None:
                advance_checkpoint(
                    IngestRun.Kind.S3, run.account_id, run.region, run.checkpoint_to, read_from=run.window_start
                )
    return run


def ingest_s3(
    source: Source,
    region: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> S3Result:
    """One pass over (source, region)'s log files, read in this process. The caller holds the scope's
    run lock. A pass the workers are still reading is read (and closed) first; if other readers
    still hold some of its claims, that is the result (`busy`) and no new pass is listed."""
    owner = reader_name()
    pending = open_run(source.account_id, region)
    if pending is not None:
        helped = read_claims(pending, owner)
        if settle_run(pending.pk) is None:
            helped.busy = True
            return helped
    result = list_pass(source, region, since=since, until=until, now=now)
    try:
        read = read_claims(result.run, owner)
    except BaseException as exc:
        try:
            done = ObjectClaim.objects.filter(run=result.run, state=ObjectClaim.State.DONE).count()
            IngestRun.objects.filter(pk=result.run.pk).update(files=done)
            finish_run(result.run, Counts(), status=IngestRun.Status.FAILED, error=describe_error(exc))
        except Exception:
            logger.exception("could not record the failed run", extra={"run": result.run.pk})
        raise
    settle_run(result.run.pk)
    result.run.refresh_from_db()
    result.counts = read.counts
    result.processed, result.quarantined_files = read.processed, read.quarantined_files
    result.deferred, result.deferred_because = read.deferred, read.deferred_because
    return result
