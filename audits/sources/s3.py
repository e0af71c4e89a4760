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

Throughput: while one object is parsed, the next PREFETCH objects (those up to PREFETCH_MAX_BYTES)
are downloaded by a small thread pool, because a GetObject waits tens of milliseconds for its first
byte, longer than parsing a typical log file takes. Objects share the Ingestor's batches, written
by a background writer, and an object's ledger row is committed with its last records.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
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
from django.utils import timezone

from audits.ingest import Counts, Ingestor, bulk_gc, ingest_run
from audits.models import Checkpoint, IngestRun, ProcessedObject, Quarantine, Source
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


def prefetched(s3: Any, bucket: str, objects: list[dict[str, Any]]) -> Iterator[tuple[dict, Future | None]]:
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
) -> None:
    """Read one object into the ingestor; `fetched`: its body being downloaded already (first attempt)."""
    key, etag = obj["Key"], obj["ETag"].strip('"')
    location = object_location(bucket, key, etag)
    if obj.get("Size", 0) > settings.KMSDASH_MAX_COMPRESSED_BYTES:
        limit = settings.KMSDASH_MAX_COMPRESSED_BYTES
        ingestor.quarantine(location=location, reason=f"{UNREADABLE}: {obj['Size']} bytes, over the {limit}-byte limit")
        result.quarantined_files += 1
        return
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
                return
            # Changed or deleted since it was listed, denied, or a server error: read on the next pass.
            if code not in ("PreconditionFailed", "NoSuchKey", "404", "412"):
                logger.warning("S3 object deferred", extra={"bucket": bucket, "key": key, "code": code})
            result.deferred += 1
            result.deferred_because = result.deferred_because or f"{code or 'ClientError'} on s3://{bucket}/{key}"
            return
        # Saved with the batch holding its last records: the object is done once they are committed.
        ingestor.done(ProcessedObject(bucket=bucket, key=key, etag=etag, records=records))
        result.processed += 1
        return
    if isinstance(error, FileError):
        ingestor.quarantine(
            location=location, reason=f"{UNREADABLE} after {settings.KMSDASH_OBJECT_ATTEMPTS} attempts: {error}"
        )
        ingestor.flush()
        result.quarantined_files += 1
    else:
        logger.warning("S3 object deferred after read errors", extra={"bucket": bucket, "key": key})
        result.deferred += 1
        result.deferred_because = result.deferred_because or f"{type(error).__name__} on s3://{bucket}/{key}"


@bulk_gc()
def ingest_s3(
    source: Source,
    region: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> S3Result:
    """One pass over (source, region)'s log files. The caller holds the scope's run lock."""
    now = now or timezone.now()
    bucket = source.s3_bucket
    watermark = Checkpoint.objects.watermark(IngestRun.Kind.S3, source.account_id, region)
    days = days_to_list(watermark, now, since=since, until=until)
    with ingest_run(
        IngestRun.Kind.S3,
        account_id=source.account_id,
        region=region,
        window_start=datetime.combine(days[0], datetime.min.time(), tzinfo=UTC) if days else None,
        window_end=now,
        # Outside a transaction (a Celery task, a command), batches are written while the next are read.
        background_writes=True,
    ) as run:
        result = S3Result(run=run.row, counts=run.counts)
        s3 = aws.client("s3", region, source=source)
        todo = []
        for day in days:
            prefix = day_prefix(source, region, day)
            listed = list(list_objects(s3, bucket, prefix))
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
                    todo.append(obj)
        try:
            for obj, fetched in prefetched(s3, bucket, todo):
                ingest_object(s3, bucket, obj, run.ingestor, result, fetched)
        finally:
            run.files = result.processed
        if result.deferred:
            run.fail(
                f"{result.deferred} object(s) could not be read and will be retried (first: {result.deferred_because})"
            )
        elif since is None and until is None:
            run.advance_checkpoint(now)
    return result
