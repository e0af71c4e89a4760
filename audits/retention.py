"""Event retention: events older than KMSDASH_EVENT_RETENTION_DAYS are purged, every count stays.

The pages count from rollups and summaries, which are never purged, so a purge shrinks what the
events explorer and the raw-record drawer can show, never a figure. Critical key-management events
(CRITICAL_EVENT_NAMES) are kept for good: they are few, and an audit of a key asks for them years
later.

Exactness. The purge moves Retention.purged_before forward one UTC day at a time, each step in one
transaction with that day's deletions, under an exclusive lock. Every ingest batch takes the same
lock shared, for its own transaction, and reads purged_before under it (`writable`). So a batch
either commits before a step (its events are then purged with the others, counted once) or sees the
step's new horizon and refuses older records as expired: a purged event is never inserted and
counted again. A record older than the horizon that was never seen (history imported after a
purge) is refused too, and counted as expired in the run ledger: import history before purging.

Raw records: once every event of a block is older than the horizon (its last_event_time), the
block is deleted, or rewritten with the records of the critical events it holds; a block holding
newer events stays whole until they age out too. PostgreSQL reuses the freed space for new rows
(autovacuum); `VACUUM FULL` gives it back to the operating system.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from kmsdash.locks import lock_key, run_lock

from . import partitions, rawcodec
from .cloudtrail import CRITICAL_EVENT_NAMES, NormalizedEvent
from .models import AlertCandidate, Event, RawBlock, Retention

_LOCK_KEY = lock_key("audits.retention")


@dataclass
class PurgeResult:
    horizon: datetime | None  # None: retention is off
    events: int = 0
    raw_blocks: int = 0  # deleted
    raw_blocks_rewritten: int = 0  # with only the records of kept events
    skipped: bool = False  # another purge holds the lock: nothing done


def horizon(*, days: int | None = None, now: datetime | None = None) -> datetime | None:
    """UTC midnight `days` days ago: events before it are purged (None when retention is off)."""
    days = settings.KMSDASH_EVENT_RETENTION_DAYS if days is None else days
    if days <= 0:
        return None
    day = ((now or timezone.now()) - timedelta(days=days)).astimezone(UTC).date()
    return datetime.combine(day, time(), tzinfo=UTC)


def purged_before() -> datetime | None:
    """How far events have been purged, or None before the first purge."""
    return Retention.objects.order_by("pk").values_list("purged_before", flat=True).first()


def writable(rows: list[tuple[NormalizedEvent, bytes]]) -> tuple[list[tuple[NormalizedEvent, bytes]], int]:
    """The rows of a batch that may be written, and how many are refused as expired.

    Runs in the batch's transaction: the shared lock it takes holds off a purge step until the
    batch commits (see the module's docstring)."""
    _lock(shared=True)
    before = purged_before()
    if before is None:
        return rows, 0
    kept = [row for row in rows if row[0].event_time >= before or row[0].event_name in CRITICAL_EVENT_NAMES]
    return kept, len(rows) - len(kept)


PURGE_LOCK = "audits.retention.purge"


def purge_events(*, days: int | None = None, now: datetime | None = None, dry_run: bool = False) -> PurgeResult:
    """Purge the events before the retention horizon, day by day, and the raw records they leave unused.

    One purge at a time (a run lock): a second caller gets a result marked `skipped`. A dry run only
    counts, and needs no lock."""
    result = PurgeResult(horizon(days=days, now=now))
    if result.horizon is None:
        return result
    if partitions.is_partitioned():
        return _purge_partitions(result, dry_run=dry_run)
    purgeable = Event.objects.exclude(event_name__in=CRITICAL_EVENT_NAMES)
    if dry_run:
        result.events = purgeable.filter(event_time__lt=result.horizon).count()
        critical = Event.objects.filter(event_name__in=CRITICAL_EVENT_NAMES)
        result.raw_blocks, result.raw_blocks_rewritten = _release_raw(
            purged_before(), result.horizon, remaining=critical, dry_run=True
        )
        return result
    with run_lock(PURGE_LOCK) as acquired:
        if not acquired:
            result.skipped = True
            return result
        return _purge(result)


def _purge(result: PurgeResult) -> PurgeResult:
    assert result.horizon is not None  # purge() returns before this when retention is off
    purgeable = Event.objects.exclude(event_name__in=CRITICAL_EVENT_NAMES)
    upper = None
    while upper != result.horizon:
        oldest = purgeable.filter(event_time__lt=result.horizon).aggregate(t=Min("event_time"))["t"]
        # One UTC day per step keeps each transaction, and the wait it imposes on ingestion, short.
        upper = result.horizon if oldest is None else min(result.horizon, _next_midnight(oldest))
        with transaction.atomic():
            _lock(shared=False)
            mark, _ = Retention.objects.select_for_update().get_or_create(pk=1)
            if mark.purged_before is not None and mark.purged_before >= upper and oldest is None:
                break  # someone purged this far already
            events, _ = purgeable.filter(event_time__lt=upper).delete()
            blocks, rewritten = _release_raw(mark.purged_before, upper, remaining=Event.objects.all())
            mark.purged_before = max(upper, mark.purged_before or upper)
            mark.purged_at = timezone.now()
            mark.events_deleted += events
            mark.raw_blocks_deleted += blocks
            mark.save()
        result.events += events
        result.raw_blocks += blocks
        result.raw_blocks_rewritten += rewritten
    return result


def _purge_partitions(result: PurgeResult, *, dry_run: bool) -> PurgeResult:
    """PostgreSQL with partitioned events: every day before the horizon goes at once, its events and
    raw blocks dropped as tables (audits/partitions.py). Critical events and their blocks live in
    partitions of their own, so nothing is moved or rewritten, and no day needs a step of its own:
    one transaction under the exclusive lock, held for a few statements."""
    assert result.horizon is not None
    with connection.cursor() as cursor:
        if dry_run:
            result.events, result.raw_blocks, _ = partitions.purge(cursor, result.horizon, dry_run=True)
            return result
        with run_lock(PURGE_LOCK) as acquired:
            if not acquired:
                result.skipped = True
                return result
            with transaction.atomic():
                _lock(shared=False)
                mark, _ = Retention.objects.select_for_update().get_or_create(pk=1)
                if mark.purged_before is not None and mark.purged_before >= result.horizon:
                    return result  # a longer retention later never moves the mark back
                result.events, result.raw_blocks, _ = partitions.purge(cursor, result.horizon)
                mark.purged_before = result.horizon
                mark.purged_at = timezone.now()
                mark.events_deleted += result.events
                mark.raw_blocks_deleted += result.raw_blocks
                mark.save()
            # The days are gone from the tables; their files are freed outside the lock (and a
            # purge stopped before this point left tables that the next one drops).
            partitions.drop(cursor, partitions.leftovers(cursor))
    return result


def _release_raw(lower: datetime | None, upper: datetime, *, remaining, dry_run: bool = False) -> tuple[int, int]:
    """Deal with the raw blocks whose records all lie before `upper`, once: those whose last record
    is from `lower` on (earlier ones were dealt with by an earlier step). A block that no `remaining`
    event uses is deleted; one that kept (critical) events still use is rewritten with their records
    only, so that one CreateGrant does not keep a thousand Decrypt records. Returns (deleted, rewritten)."""
    aged = RawBlock.objects.filter(last_event_time__lt=upper)
    if lower is not None:
        aged = aged.filter(last_event_time__gte=lower)
    used: dict[int, set[int]] = defaultdict(set)
    slots = remaining.filter(event_time__lt=upper, raw_block__in=aged.values("pk"))  # the time index finds them
    for block, index in slots.values_list("raw_block_id", "raw_index"):
        used[block].add(index)
    unused = aged.exclude(pk__in=list(used))
    if dry_run:
        return unused.count(), len(used)
    deleted, _ = unused.delete()
    for block in RawBlock.objects.filter(pk__in=list(used)).only("data"):
        texts = rawcodec.decode_block(block.data)
        kept = [text if index in used[block.pk] else b"" for index, text in enumerate(texts)]
        if kept != texts:
            RawBlock.objects.filter(pk=block.pk).update(data=rawcodec.encode_block(kept))
    return deleted, len(used)


def _next_midnight(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date() + timedelta(days=1), time(), tzinfo=UTC)


def _lock(*, shared: bool) -> None:
    """A transaction-scoped lock between ingest batches (shared) and purge steps (exclusive)."""
    if connection.vendor == "postgresql":
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {function}(%s)", [_LOCK_KEY])
    # SQLite: every write transaction begins IMMEDIATE (settings), so writers take turns anyway.


def settled_ids(*, wait_seconds: float = 30.0) -> tuple[int, int] | None:
    """(event id, alert candidate id), each the highest such that every lower id is committed or
    never will be, read at one moment with no batch in flight (so every event up to the one has its
    candidates up to the other); None when the ingest batches did not pause within `wait_seconds`.

    Alert candidates are written in their batch's transaction (audits/candidates.py), so they settle
    exactly as the events do.

    On PostgreSQL, ids of concurrent batches commit out of order: a batch that took id 100 may
    commit after one that took 101, so a plain max(id) could be passed by an id still to appear.
    Every batch holds the shared lock from before it takes ids until it commits (writable()); read
    under the exclusive lock, no batch is in flight, so every id issued so far is settled and every
    later batch's ids are higher. The lock is held only for this one read. (SQLite: writers take
    turns and ids are issued in commit order.)"""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = %s", [f"{max(int(wait_seconds * 1000), 1)}ms"])
                try:
                    with transaction.atomic():  # a savepoint: a timeout leaves the outer transaction usable
                        _lock(shared=False)
                except OperationalError:  # lock_timeout: a purge step or a batch held on
                    return None
        return (
            Event.objects.aggregate(last=Max("id"))["last"] or 0,
            AlertCandidate.objects.aggregate(last=Max("id"))["last"] or 0,
        )
