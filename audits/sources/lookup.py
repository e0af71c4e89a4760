"""CloudTrail LookupEvents (Event history) for one (account, region), window by window.

A window is [checkpoint - overlap, now - settle], at most KMSDASH_LOOKUP_MAX_WINDOW_MINUTES long.
Its pages are read with identical parameters; results come newest first, so a partial window
gives no safe watermark: the checkpoint moves to the window's end only once the whole window has
committed, in the same transaction that closes its ledger row. Re-reading the overlap is
harmless because events are deduplicated on (account, eventID).

A task reads at most `page_budget()` pages, what fits its soft time limit at the request rate. A
window holding more is cut short there (its ledger row says so, its events are kept) and the next
windows of the scope are half as long, down to the overlap plus MIN_PROGRESS; they grow back after
windows that read under a quarter of the budget. Without this a busy hour would be cut short on
every tick and re-planned the same, and the scope would never move again.

LookupEvents allows 2 requests/s per account and Region. Every HTTP attempt (retries included)
waits for its turn in the scope's shared limit (audits/sources/pacing.py), which the inventory's
look-up of trail changes draws on too, from any process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from audits.ingest import Counts, Run, ingest_run
from audits.models import Checkpoint, IngestRun, Source
from audits.sources import pacing
from kmsdash import aws

logger = logging.getLogger(__name__)

KMS_LOOKUP = [{"AttributeKey": "EventSource", "AttributeValue": "kms.amazonaws.com"}]
PAGE_SIZE = 50
# An expired or rejected NextToken restarts the window; this many restarts, then the run fails.
MAX_WINDOW_RESTARTS = 3
THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"})


# The shortest scheduled window reaches this far past the overlap, so every window moves the checkpoint.
MIN_PROGRESS = timedelta(minutes=5)
CUT_SHORT = "Cut short"


class WindowFailed(Exception):
    """A window could not be read; the checkpoint stays where it was."""


class WindowCutShort(WindowFailed):
    """A window held more pages than the task could still read; the next windows are shorter."""


class Throttled(WindowFailed):
    """Still throttled after the SDK's own retries: worth a later retry of the whole task."""


def cloudtrail_client(source: Source, region: str) -> Any:
    return pacing.pace_lookup_events(aws.client("cloudtrail", region, source=source), source.account_id, region)


@dataclass
class Window:
    start: datetime
    end: datetime


def page_budget() -> int:
    """The pages one task reads at most: its soft time limit at the request rate, with a margin."""
    return max(1, int(settings.CELERY_TASK_SOFT_TIME_LIMIT * settings.KMSDASH_LOOKUP_RATE_PER_SECOND * 0.8))


def window_length(account_id: str, region: str) -> timedelta:
    """How long the scope's next scheduled window may be, from how its last one went."""
    longest = timedelta(minutes=settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES)
    shortest = min(longest, timedelta(minutes=settings.KMSDASH_LOOKUP_OVERLAP_MINUTES) + MIN_PROGRESS)
    # Runs that failed for another reason (a crash, throttling) say nothing about the window's size.
    last = (
        IngestRun.objects.filter(
            Q(status=IngestRun.Status.SUCCEEDED) | Q(error__startswith=CUT_SHORT),
            kind=IngestRun.Kind.LOOKUP,
            account_id=account_id,
            region=region,
            window_start__isnull=False,
            window_end__isnull=False,
        )
        .order_by("-started_at", "-id")
        .first()
    )
    if last is None or last.window_end is None or last.window_start is None:  # the query excludes open ones
        return longest
    length = last.window_end - last.window_start
    if last.error.startswith(CUT_SHORT):
        return max(shortest, length / 2)
    if last.status == IngestRun.Status.SUCCEEDED and last.pages < page_budget() / 4:
        length *= 2
    return min(longest, max(shortest, length))


def plan_windows(
    high_watermark: datetime | None,
    now: datetime,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    length: timedelta | None = None,
) -> Iterator[Window]:
    """The windows to read, oldest first.

    Scheduled runs: from the checkpoint (minus the overlap) up to now - settle, at most `length`
    (default: the configured maximum). The checkpoint is re-read after each window, so callers pass
    it in again (see `ingest_lookup`). With since/until, exactly that range, in max-window pieces.
    """
    max_window = timedelta(minutes=settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES)
    if since is not None or until is not None:
        start = since or now - timedelta(days=settings.KMSDASH_LOOKUP_INITIAL_DAYS)
        end = min(until or now, now)
        while start < end:
            yield Window(start, min(start + max_window, end))
            start = min(start + max_window, end)
        return
    overlap = timedelta(minutes=settings.KMSDASH_LOOKUP_OVERLAP_MINUTES)
    limit = now - timedelta(minutes=settings.KMSDASH_LOOKUP_SETTLE_MINUTES)
    if high_watermark is None:
        start = now - timedelta(days=settings.KMSDASH_LOOKUP_INITIAL_DAYS)
    else:
        start = high_watermark - overlap
    end = min(start + (length or max_window), limit)
    if end <= start or (high_watermark is not None and end <= high_watermark):
        return
    yield Window(start, end)


def read_window(cloudtrail: Any, window: Window, *, max_pages: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """The pages of one window, every call with the same parameters; WindowCutShort instead of
    requesting a page past `max_pages`."""
    params = {
        "LookupAttributes": KMS_LOOKUP,
        "StartTime": window.start,
        "EndTime": window.end,
        "MaxResults": PAGE_SIZE,
    }
    # The paginator requests a page only when it is iterated: it is never asked for the one past
    # `max_pages`.
    for pages, response in enumerate(cloudtrail.get_paginator("lookup_events").paginate(**params), 1):
        yield response.get("Events", [])
        if response.get("NextToken") and max_pages is not None and pages >= max_pages:
            raise WindowCutShort(
                f"{CUT_SHORT} after {pages} pages, what this task could read: the next windows of this scope "
                "are shorter"
            )


@dataclass
class WindowResult:
    window: Window
    run: IngestRun
    counts: Counts


def ingest_window(
    source: Source, region: str, cloudtrail: Any, window: Window, *, max_pages: int | None = None
) -> WindowResult:
    """Read one window whole, then advance the checkpoint (never backwards, never past a gap).

    Raises WindowCutShort, its events kept, once `max_pages` pages were read and more remain."""
    location = f"lookup:{source.account_id}:{region}"
    restarts = 0
    try:
        with ingest_run(
            IngestRun.Kind.LOOKUP,
            account_id=source.account_id,
            region=region,
            window_start=window.start,
            window_end=window.end,
            describe=_window_error,
        ) as run:
            run.pages = 0
            while True:
                try:
                    for events in read_window(cloudtrail, window, max_pages=max_pages):
                        run.pages += 1
                        for event in events:
                            run.ingestor.add(event.get("CloudTrailEvent") or "", location=location)
                    break
                except ClientError as exc:
                    if aws.error_code(exc) != "InvalidNextTokenException" or restarts >= MAX_WINDOW_RESTARTS:
                        raise
                    restarts += 1
                    logger.warning(
                        "lookup window restarted after an invalid NextToken",
                        extra={"account_id": source.account_id, "region": region, "restart": restarts},
                    )
            run.advance_checkpoint(window.end, read_from=window.start)
    except ClientError as exc:
        if aws.error_code(exc) in THROTTLING_CODES:
            raise Throttled(_describe(exc)) from exc
        raise WindowFailed(_describe(exc)) from exc
    return WindowResult(window, run.row, run.counts)


def _window_error(exc: BaseException, run: Run) -> str:
    """The ledger's error for a failed window; a window cut short says so, so the next are shorter."""
    if isinstance(exc, WindowCutShort):
        return str(exc)
    if isinstance(exc, SoftTimeLimitExceeded):  # the budget should prevent it; if not, shrink too
        return f"{CUT_SHORT} by the task's soft time limit after {run.pages} pages"
    return _describe(exc)


def ingest_lookup(
    source: Source,
    region: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    budget_seconds: float | None = None,
) -> list[WindowResult]:
    """Read every window due for (source, region), oldest first, within a time budget.

    The caller holds the scope's run lock. A failed window raises (its ledger row says why) and
    leaves the checkpoint where the last complete window put it.
    """
    now = now or timezone.now()
    if budget_seconds is None:
        budget_seconds = settings.CELERY_TASK_SOFT_TIME_LIMIT / 2
    deadline = time.monotonic() + budget_seconds
    cloudtrail = cloudtrail_client(source, region)
    results: list[WindowResult] = []
    window: Window | None
    if since is not None or until is not None:
        for window in plan_windows(None, now, since=since, until=until):
            results.append(ingest_window(source, region, cloudtrail, window))
        return results
    budget = pages_left = page_budget()
    # A new window starts only with at least half the budget left, so a window cut short held more
    # than half of what a task reads: halving it is not a waste.
    while time.monotonic() < deadline and pages_left >= budget / 2:
        watermark = Checkpoint.objects.watermark(IngestRun.Kind.LOOKUP, source.account_id, region)
        length = window_length(source.account_id, region)
        window = next(plan_windows(watermark, now, length=length), None)
        if window is None:
            break
        try:
            result = ingest_window(source, region, cloudtrail, window, max_pages=pages_left)
        except WindowCutShort:
            logger.warning("lookup window cut short", extra={"account_id": source.account_id, "region": region})
            break
        results.append(result)
        pages_left -= result.run.pages
    return results


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]
