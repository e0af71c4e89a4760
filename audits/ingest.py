"""The one write path for KMS events: parse, deduplicate, bulk write, roll up, quarantine, ledger.

Every source (LookupEvents, S3 log files, local files) hands raw records to an `Ingestor`. A batch
is written in ONE transaction holding its events, the rollup increments of exactly the events
that were inserted (the database says which, through ON CONFLICT DO NOTHING RETURNING), its
quarantine rows and the ledger's counters. So a duplicate, a re-run or a concurrent run over the
same records can never count an event twice, and a crash mid-batch leaves nothing half-written.

PostgreSQL: COPY into a temporary staging table, then one statement inserts the new events and
upserts their rollups and the rollups' narrower summaries (audits/rollups.py). SQLite: multi-row INSERT ...
ON CONFLICT DO NOTHING RETURNING, rollups and summaries summed in Python from the returned keys
and upserted.

Raw records are kept in RawBlock rows of up to rawcodec.BLOCK_RECORDS records each, zstd-compressed
together in the same transaction; an event names its block and slot. A block holds only the records
of the events its batch inserted, so re-runs and duplicates add no raw bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import logging
import operator
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, final

import orjson
from django.conf import settings
from django.db import OperationalError, connection, connections, models, transaction
from django.db.models import F
from django.utils import timezone
from psycopg.types.json import Jsonb

from kmsdash import aws, totals

from . import candidates, partitions, rawcodec, retention
from .cloudtrail import (
    CRITICAL_EVENT_NAMES,
    BusinessHours,
    NormalizedEvent,
    NotKmsEvent,
    OwnCalls,
    ParseError,
    loads_record,
    parse_record,
)
from .fields import unique_key_sql
from .models import AlertCandidate, Checkpoint, Event, IngestRun, Quarantine, QuotaMinute, RawBlock, Source
from .rollups import DIMENSIONS, QUOTA_MINUTE, SUMMARIES, Summary

logger = logging.getLogger(__name__)

QUARANTINE_RAW_LIMIT = 64 * 1024
DEADLOCK_ATTEMPTS = 3

# Staged and inserted columns: every normalized field, then where the raw record is kept.
EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(NormalizedEvent))
EVENT_COLUMNS = EVENT_FIELDS + ("critical", "raw_block_id", "raw_index")


@dataclass
class Counts:
    records_read: int = 0
    events_new: int = 0
    duplicates: int = 0
    ignored: int = 0
    quarantined: int = 0
    expired: int = 0  # older than the retention purge's horizon (audits/retention.py)

    def __iadd__(self, other: Counts) -> Counts:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))
        return self

    def __add__(self, other: Counts) -> Counts:
        total = Counts(**dataclasses.asdict(self))
        total += other
        return total

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@final  # so that Ingestor.add's `type(record) is Unread` (cheaper than isinstance) narrows the rest
@dataclass(frozen=True)
class Unread:
    """A record a source could not hand over whole (e.g. one larger than any record may be, skipped
    as it was read): Ingestor.add quarantines it alone with `reason` and what may be shown of it."""

    reason: str
    raw: bytes = b""


def start_run(kind: str, *, account_id: str = "", region: str = "", window_start=None, window_end=None) -> IngestRun:
    with transaction.atomic():
        run = IngestRun.objects.create(
            kind=kind, account_id=account_id, region=region, window_start=window_start, window_end=window_end
        )
        totals.add(totals.RUNS, {"source": kind, "status": run.status}, 1)
    return run


def run_totals_change(kind: str, before: dict[str, Any], after: dict[str, Any]) -> dict[totals.Key, int]:
    """What a ledger row's change from `before` to `after` (status, events_new, quarantined) adds to
    the totals (kmsdash/totals.py): the run moves from one status to the other, and its counters'
    difference is added."""
    change: dict[totals.Key, int] = {
        totals.key(totals.EVENTS, source=kind): after["events_new"] - before["events_new"],
        totals.key(totals.QUARANTINED, source=kind): after["quarantined"] - before["quarantined"],
    }
    if before["status"] != after["status"]:
        change[totals.key(totals.RUNS, source=kind, status=before["status"])] = -1
        change[totals.key(totals.RUNS, source=kind, status=after["status"])] = 1
    return change


def finish_run(
    run: IngestRun, counts: Counts, *, status: str = IngestRun.Status.SUCCEEDED, error: str = ""
) -> IngestRun:
    with transaction.atomic():
        # Under the row's lock, from what the row says now: a run that another closer (a later
        # pass's close_interrupted_runs) closed first moves between statuses once, never twice.
        before = IngestRun.objects.select_for_update().values(*_TOTALLED).get(pk=run.pk)
        run.finished_at = timezone.now()
        run.duration_seconds = max((run.finished_at - run.started_at).total_seconds(), 0.0)
        run.status = status
        run.error = error
        fields = ["finished_at", "duration_seconds", "status", "error"]
        if status == IngestRun.Status.SUCCEEDED:
            # Every batch committed, so `counts` equals what the batches added to the row.
            for name, value in counts.as_dict().items():
                setattr(run, name, value)
            fields += counts.as_dict()
        run.save(update_fields=fields)
        if status != IngestRun.Status.SUCCEEDED:
            # The row holds what the committed batches counted; `counts` may include a batch that
            # rolled back (its quarantine rows, for one, do not exist).
            run.refresh_from_db(fields=list(counts.as_dict()))
        totals.add_many(run_totals_change(run.kind, before, {name: getattr(run, name) for name in _TOTALLED}))
    return run


_TOTALLED = ("status", "events_new", "quarantined")  # the row's fields that the totals sum


def describe_error(exc: BaseException, run: Run | None = None) -> str:
    """How a failed run's ledger row names the error that ended it."""
    return f"{type(exc).__name__}: {exc}"[:2000]


class Run:
    """One pass of a source, as `ingest_run` gives it: its ledger row, the Ingestor that writes its
    records, the ledger's other counters, and what the pass asks for once it succeeds.

    The source sets `files` or `pages` (written to the row however the run ends), calls `fail()` for
    a pass that ends normally but incomplete (no checkpoint moves), and `advance_checkpoint()` for
    the position it has read up to whole (moved in the transaction that closes the row, only if the
    run succeeds)."""

    def __init__(self, row: IngestRun, ingestor: Ingestor):
        self.row = row
        self.ingestor = ingestor
        self.files: int | None = None
        self.pages: int | None = None
        self.failure = ""
        self._checkpoint: tuple[datetime, datetime | None] | None = None

    @property
    def counts(self) -> Counts:
        return self.ingestor.counts

    def fail(self, error: str) -> None:
        self.failure = error[:2000]

    def advance_checkpoint(self, to: datetime, *, read_from: datetime | None = None) -> None:
        """On success, move the scope's checkpoint to `to`: never backwards, and, given `read_from`
        (where the pass started reading), only if the checkpoint lies within [read_from, to): no gap."""
        self._checkpoint = (to, read_from)

    def _close(self, status: str, error: str) -> None:
        counters = {name: value for name, value in (("files", self.files), ("pages", self.pages)) if value is not None}
        if counters:
            IngestRun.objects.filter(pk=self.row.pk).update(**counters)
            for name, value in counters.items():
                setattr(self.row, name, value)
        finish_run(self.row, self.counts, status=status, error=error)

    def _succeed(self) -> None:
        if self.failure:
            self._close(IngestRun.Status.FAILED, self.failure)
            return
        with transaction.atomic():
            self._close(IngestRun.Status.SUCCEEDED, "")
            if self._checkpoint is not None:
                to, read_from = self._checkpoint
                advance_checkpoint(self.row.kind, self.row.account_id, self.row.region, to, read_from=read_from)


@contextmanager
def ingest_run(
    kind: str,
    *,
    account_id: str = "",
    region: str = "",
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    describe: Callable[[BaseException, Run], str] = describe_error,
    **ingestor_options: Any,
) -> Iterator[Run]:
    """Start a run (its ledger row and its Ingestor) for the `with` block, then close it.

    When the block ends, everything buffered is written and the row closed as succeeded (or as the
    block's `run.fail()` said), with the checkpoint it asked for. When the block raises (anything,
    a Ctrl-C or a Celery time limit included), what was read before is still written, the row is
    closed as failed with `describe(exc, run)`, the checkpoint stays, and the error goes on up.
    """
    row = start_run(kind, account_id=account_id, region=region, window_start=window_start, window_end=window_end)
    run = Run(row, Ingestor(row, **ingestor_options))
    try:
        yield run
        run.ingestor.flush()
    except BaseException as exc:
        try:
            run.ingestor.flush()
            run._close(IngestRun.Status.FAILED, describe(exc, run))
        except Exception:  # e.g. the database went away: the original error matters more
            logger.exception("could not record the failed run", extra={"run": row.pk, "kind": kind})
        raise
    run._succeed()


def advance_checkpoint(
    kind: str, account_id: str, region: str, to: datetime, *, read_from: datetime | None = None
) -> None:
    """Move (kind, account, region)'s checkpoint to `to`, or create it there; never backwards, and
    with `read_from` only when the checkpoint lies at or after it (the pass left no gap)."""
    checkpoint = Checkpoint.objects.select_for_update().filter(kind=kind, account_id=account_id, region=region).first()
    if checkpoint is None:
        Checkpoint.objects.create(kind=kind, account_id=account_id, region=region, high_watermark=to)
    elif checkpoint.high_watermark < to and (read_from is None or read_from <= checkpoint.high_watermark):
        checkpoint.high_watermark = to
        checkpoint.save(update_fields=["high_watermark", "updated_at"])


class Ingestor:
    """Buffers records and writes them in batches; each batch is ONE transaction holding its events,
    their rollup increments and its quarantine rows. Only events actually inserted (not duplicates)
    increment rollups, so re-runs and concurrent runs never double count."""

    def __init__(
        self,
        run: IngestRun,
        *,
        hours: BusinessHours | None = None,
        batch_size: int | None = None,
        background_writes: bool = False,
    ):
        """background_writes: on PostgreSQL, outside a transaction, a full batch is written by one
        writer thread (its own connection) while the next batch is parsed, so the database's work
        overlaps the parsing. Batches still commit one at a time, in order; flush() waits for all."""
        self.run = run
        self.background_writes = background_writes
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None
        self.hours = hours or BusinessHours.from_settings()
        self.own_calls = own_calls()
        self.batch_size = batch_size or settings.KMSDASH_INGEST_BATCH_SIZE
        self.max_record_bytes = settings.KMSDASH_MAX_RECORD_BYTES
        self.counts = Counts()
        self._pending = Counts()  # not yet written to the ledger row
        self._events: list[tuple[NormalizedEvent, bytes]] = []  # with the record's JSON text
        self._quarantine: list[Quarantine] = []
        # The (location, reason, text) of the rows in _quarantine, and how many more records gave one
        # of them again: kept once, as the database would (insert_quarantine), without building rows.
        self._quarantine_keys: set[tuple[str, str, str]] = set()
        self._quarantine_repeats = 0
        self._done: list[models.Model | Callable[[], object]] = []

    # -- reading -------------------------------------------------------------------------------

    def add(self, record: dict | str | bytes | Unread, *, location: str = "") -> None:
        self._pending.records_read += 1
        self.counts.records_read += 1
        if type(record) is Unread:
            self._add_quarantine(location, record.reason, record.raw)
            return
        original: Any = record
        try:
            if isinstance(record, str | bytes):
                if len(record) > self.max_record_bytes:
                    raise ParseError(f"record larger than {self.max_record_bytes} bytes")
                record = loads_record(record)
            text = rawcodec.dumps(record)
            original = text
            if len(text) > self.max_record_bytes:
                raise ParseError(f"record larger than {self.max_record_bytes} bytes")
            # The mark is not ASCII, and isascii() is far cheaper than searching a text for it.
            if not text.isascii() and _INVALID_UTF8_BYTES in text:
                raise ParseError("invalid UTF-8 in the record")
            # The text spares parse_record walking the whole record to check how deep it nests.
            event = parse_record(record, self.hours, json_text=text, own_calls=self.own_calls)
        except NotKmsEvent:
            self._pending.ignored += 1
            self.counts.ignored += 1
            return
        except ParseError as exc:
            self._add_quarantine(location, str(exc), original)
            return
        except (ValueError, TypeError, RecursionError) as exc:  # e.g. nesting too deep, NaN, odd types
            self._add_quarantine(location, f"{type(exc).__name__}: {exc}", original)
            return
        self._events.append((event, text))
        if len(self._events) >= self.batch_size:
            self._write(wait=False)

    def quarantine(self, *, location: str, reason: str, raw: str | bytes = "") -> None:
        """A whole file or page that could not be read; written with the next batch."""
        self._add_quarantine(location, reason, raw)

    def done(self, row: models.Model | Callable[[], object]) -> None:
        """A ledger row (e.g. a ProcessedObject) saved in the transaction of the batch holding the
        records added before it, so it is committed only once they are. (When a batch fails, its
        error surfaces in the next write, which drops that write's batch: nothing after a failed
        batch is committed.) A row that exists already is left as it is. A callable (an update of
        ledger rows, e.g. settling an ObjectClaim) is called in that transaction, after the rows."""
        self._done.append(row)

    def _add_quarantine(self, location: str, reason: str, raw: Any) -> None:
        text, truncated = bounded_text(raw)
        reason, _ = bounded_text(reason, 4096)
        location, _ = bounded_text(location, 2048)
        self._pending.quarantined += 1
        self.counts.quarantined += 1
        key = (location, reason, text)
        if key in self._quarantine_keys:  # e.g. a file of millions of identical bad records
            self._quarantine_repeats += 1
        else:
            self._quarantine_keys.add(key)
            self._quarantine.append(
                Quarantine(run=self.run, location=location, reason=reason, raw=text, raw_truncated=truncated)
            )
        if len(self._quarantine) + self._quarantine_repeats >= self.batch_size:
            self._write(wait=False)

    # -- writing -------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything buffered; when it returns, all of it is committed and counted."""
        self._write(wait=True)

    def _write(self, *, wait: bool) -> None:
        # Sorted, so that concurrent runs lock rows in the same order and cannot deadlock each other;
        # time first, so that rows, raw blocks and index entries are written in time order (log files
        # cover minutes each: the time and per-key indexes then grow at their ends, and are smaller).
        rows = sorted(self._events, key=_write_order)
        batch = (rows, list(self._quarantine), self._pending, list(self._done), self._quarantine_repeats)
        self._events.clear()
        self._quarantine.clear()
        self._quarantine_keys.clear()
        self._quarantine_repeats = 0
        self._done.clear()
        self._pending = Counts()
        try:
            self._collect()
            if not (rows or batch[1] or batch[2] != Counts() or batch[3]):
                return
            if not wait and self._can_write_in_background():
                if self._writer is None:
                    self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer")
                self._in_flight = self._writer.submit(self._write_batch, *batch)
            else:
                self._count(*self._write_batch(*batch))
        finally:
            if wait:
                self._stop_writer()

    def _can_write_in_background(self) -> bool:
        return self.background_writes and connection.vendor == "postgresql" and not connection.in_atomic_block

    def _collect(self) -> None:
        """Wait for the batch being written in the background, if any; its errors surface here."""
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            self._count(*in_flight.result())

    def _stop_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                self._collect()
            finally:
                writer.submit(connections.close_all).result()  # the writer thread's own connection
                writer.shutdown()

    def _count(self, inserted: int, duplicates: int, expired: int, requarantined: int) -> None:
        self.counts.events_new += inserted
        self.counts.duplicates += duplicates + requarantined
        self.counts.quarantined -= requarantined
        self.counts.expired += expired

    def _write_batch(
        self,
        rows,
        quarantine: list[Quarantine],
        pending: Counts,
        done: list[models.Model | Callable[[], object]],
        repeats: int = 0,
    ) -> tuple[int, int, int, int]:
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                with transaction.atomic():
                    writable, expired = retention.writable(rows)
                    inserted = write_events(writable)
                    # A record quarantined before (re-read in an overlapping window, or by a retry
                    # of its file) is kept once, and counted like a duplicate event.
                    requarantined = len(quarantine) + repeats - insert_quarantine(quarantine)
                    ledger = [row for row in done if isinstance(row, models.Model)]
                    for model in {type(row) for row in ledger}:
                        model._default_manager.bulk_create(
                            [row for row in ledger if type(row) is model], ignore_conflicts=True
                        )
                    for update in done:
                        if not isinstance(update, models.Model):
                            update()
                    duplicates = len(writable) - inserted
                    IngestRun.objects.filter(pk=self.run.pk).update(
                        records_read=F("records_read") + pending.records_read,
                        events_new=F("events_new") + inserted,
                        duplicates=F("duplicates") + duplicates + requarantined,
                        ignored=F("ignored") + pending.ignored,
                        quarantined=F("quarantined") + pending.quarantined - requarantined,
                        expired=F("expired") + expired,
                    )
                    # Last, so the totals' rows (shared by every run of the kind) stay locked only
                    # until this commit.
                    totals.add_many(
                        {
                            totals.key(totals.EVENTS, source=self.run.kind): inserted,
                            totals.key(totals.QUARANTINED, source=self.run.kind): pending.quarantined - requarantined,
                        }
                    )
                return inserted, duplicates, expired, requarantined
            except OperationalError as exc:  # deadlock or serialization failure: the batch rolled back whole
                if attempt == DEADLOCK_ATTEMPTS or "deadlock" not in str(exc).lower():
                    raise
                logger.warning("ingest batch retried after %s", exc)
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")


def own_calls() -> OwnCalls:
    """kmsdash's user agent mark and its known principals: the sources' reader roles and
    KMSDASH_SELF_PRINCIPALS (read once per ingestor: a source added mid-run counts from the next)."""
    roles = Source.objects.exclude(role_arn="").values_list("role_arn", flat=True)
    return OwnCalls(aws.USER_AGENT_MARK, frozenset([*roles, *settings.KMSDASH_SELF_PRINCIPALS]))


def _write_order(row: tuple[NormalizedEvent, bytes]) -> tuple:
    event = row[0]
    return event.event_time, event.recipient_account_id, event.event_id


@contextmanager
def bulk_gc():
    """Fewer cyclic garbage collections during a bulk ingestion.

    A batch keeps tens of thousands of parsed events alive, and Python's default thresholds start a
    collection every 700 allocations, each walking the young objects and now and then all of them:
    a quarter of an import's CPU (100,000 events: 12.2 s of CPU, 9.1 s with these thresholds).
    Records are trees of dicts and strings that reference counting frees, so deferring the cycle
    collector holds back almost nothing. Used as a decorator or a `with` block; restores the
    thresholds on the way out.
    """
    old = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def ingest_records(records: Iterable[dict | str | bytes | Unread], *, run: IngestRun, location: str = "") -> Counts:
    ingestor = Ingestor(run)
    for record in records:
        ingestor.add(record, location=location)
    ingestor.flush()
    return ingestor.counts


# Written into decoded text by audits/sources/files.py in place of bytes that are not UTF-8, so
# that the record carrying them is quarantined rather than silently altered. A Unicode
# noncharacter: never valid in interchanged text, so no real record contains it.
INVALID_UTF8_MARK = "\ufdd0"
_INVALID_UTF8_BYTES = INVALID_UTF8_MARK.encode()


def bounded_text(raw: Any, limit: int = QUARANTINE_RAW_LIMIT) -> tuple[str, bool]:
    """A displayable, storable copy of a rejected record: at most `limit` characters, no NUL."""
    if isinstance(raw, bytes | bytearray | memoryview):
        text = bytes(raw[: limit * 4]).decode("utf-8", "replace")
        truncated = len(raw) > limit * 4
    elif isinstance(raw, str):
        text, truncated = raw, False
    else:
        try:
            text = json.dumps(raw, ensure_ascii=False, default=str)
        except (ValueError, TypeError, RecursionError):
            try:
                text = repr(raw)
            except RecursionError:
                text = "(too deeply nested to show)"
        truncated = False
    if len(text) > limit:
        text, truncated = text[:limit], True
    text = text.replace("\x00", "\ufffd").encode("utf-8", "kmsdash-replacement-character").decode("utf-8")
    return text, truncated


_QUARANTINE_COLUMNS = ("run_id", "location", "reason", "raw", "raw_truncated", "created_at")
_QUARANTINE_ROWS_PER_INSERT = 500


def insert_quarantine(rows: list[Quarantine]) -> int:
    """Insert the rows not quarantined already (same location, reason and text); returns how many."""
    if not rows:  # nearly every batch
        return 0
    table = Quarantine._meta.db_table
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    inserted = 0
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _QUARANTINE_ROWS_PER_INSERT):
            chunk = rows[start : start + _QUARANTINE_ROWS_PER_INSERT]
            values = ", ".join(["(" + ", ".join(["%s"] * len(_QUARANTINE_COLUMNS)) + ")"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(_QUARANTINE_COLUMNS)}) VALUES {values} "
                "ON CONFLICT DO NOTHING RETURNING id",
                [
                    v
                    for row in chunk
                    for v in (row.run_id, row.location, row.reason, row.raw, row.raw_truncated, created_at)
                ],
            )
            inserted += len(cursor.fetchall())
    return inserted


def write_events(rows: list[tuple[NormalizedEvent, bytes]]) -> int:
    """Insert the events that are new with their raw records, add them to the rollups; returns how
    many were new. `rows` pairs each event with its record's JSON text (rawcodec.dumps).

    Must run inside a transaction. Duplicates of each other within `rows` count once.
    """
    if not rows:
        return 0
    unique: dict[tuple[str, str], tuple[NormalizedEvent, bytes]] = {}
    for event, text in rows:
        unique.setdefault((event.recipient_account_id, event.event_id), (event, text))
    # Each row gets a slot in a block before the insert says which rows are new; the blocks are
    # filled afterwards with the records of the new rows only, so duplicates store nothing.
    # A block's last_event_time counts its duplicates' times too: never earlier than its events', so
    # the retention purge can only keep a block too long, never drop one still in use.
    partitioned = connection.vendor == "postgresql" and partitions.is_partitioned()
    chunks = _chunks(list(unique.values()), partitioned=partitioned)
    blocks = RawBlock.objects.bulk_create(
        [
            RawBlock(
                data=b"",
                last_event_time=max(event.event_time for event, _ in chunk),
                critical=any(event.event_name in CRITICAL_EVENT_NAMES for event, _ in chunk),
            )
            for chunk in chunks
        ]
    )
    rows = [row for chunk in chunks for row in chunk]
    slots = [(block.pk, index) for block, chunk in zip(blocks, chunks, strict=True) for index in range(len(chunk))]
    # Nearly every row is new: each block is compressed as if all its rows were while the database
    # inserts them (zstd releases the GIL), and again, without its duplicates, only if it has any.
    texts = [[text for _, text in chunk] for chunk in chunks]
    compressed = [_compressor().submit(rawcodec.encode_block, chunk_texts) for chunk_texts in texts]
    if connection.vendor == "postgresql":
        inserted = _write_postgresql(rows, slots, partitioned=partitioned)
    else:
        inserted = _write_sqlite(rows, slots)
    _fill_blocks(blocks, texts, inserted, [future.result() for future in compressed])
    return len(inserted)


def _chunks(
    rows: list[tuple[NormalizedEvent, bytes]], *, partitioned: bool
) -> list[list[tuple[NormalizedEvent, bytes]]]:
    """The rows in blocks of up to rawcodec.BLOCK_RECORDS. Partitioned: one run of blocks per UTC day
    and criticality, so a block lives in the partition of its records' day and a critical record
    (kept for good) never shares a block with one that a purge drops (audits/partitions.py)."""
    size = rawcodec.BLOCK_RECORDS
    if not partitioned:
        return [rows[first : first + size] for first in range(0, len(rows), size)]
    groups: dict[tuple, list[tuple[NormalizedEvent, bytes]]] = {}
    for row in rows:
        event = row[0]
        groups.setdefault(
            (event.event_time.astimezone(UTC).date(), event.event_name in CRITICAL_EVENT_NAMES), []
        ).append(row)
    return [group[first : first + size] for _, group in sorted(groups.items()) for first in range(0, len(group), size)]


@functools.cache
def _compressor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-block-zstd")


# A forked child (a Celery prefork worker, a multiprocessing loader) has none of its parent's
# threads: it must start its own pool rather than queue work for a thread that is not there.
os.register_at_fork(after_in_child=_compressor.cache_clear)


def _fill_blocks(blocks: list[RawBlock], texts: list[list[bytes]], inserted: set, compressed: list[bytes]) -> None:
    """Store each block's records, given the blocks compressed with every slot filled."""
    empty = []
    for n, block in enumerate(blocks):
        kept = [text if (block.pk, index) in inserted else b"" for index, text in enumerate(texts[n])]
        # The partition keys let PostgreSQL go straight to the block's partition.
        this = RawBlock.objects.filter(pk=block.pk, critical=block.critical, last_event_time=block.last_event_time)
        if all(kept):
            this.update(data=compressed[n])
        elif any(kept):
            this.update(data=rawcodec.encode_block(kept))
        else:
            empty.append(block.pk)
    if empty:
        RawBlock.objects.filter(pk__in=empty).delete()


_EVENT_TABLE = Event._meta.db_table
_STAGE_TABLE = "kmsdash_event_stage"
_PG_TYPES = {
    "event_time": "timestamptz",
    "read_only": "bool",
    "after_hours": "bool",
    "own": "bool",
    "critical": "bool",
    "encryption_context": "jsonb",
    "raw_block_id": "int8",
    "raw_index": "int4",
}


# Staged only: the request fields alert candidates keep of a key-management call (audits/candidates.py).
_STAGE_COLUMNS = (*EVENT_COLUMNS, "alert_detail")


def _pg_stage_sql() -> str:
    columns = ", ".join(f"{name} {_PG_TYPES.get(name, 'text')}" for name in _STAGE_COLUMNS)
    return f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE_TABLE} ({columns}) ON COMMIT DELETE ROWS"


def conflict_target(model: type[models.Model]) -> str:
    """The `ON CONFLICT (...)` target naming `model`'s one unique constraint (columns or a UniqueKey)."""
    return _conflict_target(model, connection.vendor)


@functools.cache
def _conflict_target(model: type[models.Model], vendor: str, partitioned: bool = False) -> str:
    if partitioned and model is Event:
        return partitions.event_conflict_target()
    (constraint,) = [c for c in model._meta.constraints if isinstance(c, models.UniqueConstraint)]
    if constraint.expressions:
        (expression,) = constraint.expressions
        assert isinstance(expression, models.Expression)  # a UniqueKey
        return f"({unique_key_sql(model, expression, connection)})"
    columns = []
    for name in constraint.fields:
        field = model._meta.get_field(name)
        assert isinstance(field, models.Field) and field.column  # a column of the table
        columns.append(field.column)
    return "(" + ", ".join(columns) + ")"


def _pg_insert_sql(partitioned: bool) -> str:
    # The quota floors follow settings (KMSDASH_KMS_QUOTAS), which tests change.
    return _pg_insert_sql_for(json.dumps(candidates.quota_floors(), sort_keys=True), partitioned)


@functools.cache
def _pg_insert_sql_for(floors: str, partitioned: bool) -> str:
    columns = ", ".join(EVENT_COLUMNS)
    upserts = []
    minutes = ""
    for n, summary in enumerate(SUMMARIES):
        table, dims = summary.table, summary.dim_columns
        counts = ", ".join(
            f"count(*) FILTER (WHERE {count.where})" if count.where else "count(*)" for count in summary.counts
        )
        added = ", ".join(f"{column} = {table}.{column} + EXCLUDED.{column}" for column in summary.count_names)
        where = f"WHERE {summary.counted[0]}" if summary.counted else ""
        # The quota summary hands its new totals to the alert candidates.
        returning = "1"
        if summary is QUOTA_MINUTE:
            minutes = f"summary{n}"
            returning = f"{summary.dim_columns}, {summary.count_columns}, first_seen, last_seen"
        upserts.append(f"""
        summary{n} AS (
            INSERT INTO {table} ({dims}, {summary.count_columns}, first_seen, last_seen)
            SELECT {dims}, {counts}, min(event_time), max(event_time) FROM inserted {where}
            GROUP BY {dims} ORDER BY {dims}
            ON CONFLICT {conflict_target(summary.model)} DO UPDATE SET {added},
                first_seen = LEAST({table}.first_seen, EXCLUDED.first_seen),
                last_seen = GREATEST({table}.last_seen, EXCLUDED.last_seen)
            RETURNING {returning}
        )""")
    upserts += candidates.pg_ctes("inserted", _STAGE_TABLE, minutes, json.loads(floors))
    # The inserted events' columns under the names the summaries' dimensions and conditions use.
    returned = ", ".join(dim.sql if dim.sql == dim.column else f"{dim.sql} AS {dim.column}" for dim in DIMENSIONS)
    # Data-modifying CTEs run to completion whether read or not; reading them keeps that visible.
    counted = ", ".join(f"(SELECT count(*) FROM summary{n})" for n in range(len(SUMMARIES)))
    return f"""
        WITH inserted AS (
            INSERT INTO {_EVENT_TABLE} ({columns})
            SELECT {columns} FROM {_STAGE_TABLE} ORDER BY event_time, recipient_account_id, event_id
            ON CONFLICT {_conflict_target(Event, "postgresql", partitioned)} DO NOTHING
            RETURNING id, event_time, encryption_context, raw_block_id, raw_index, principal_type, caller_account_id,
                {returned}
        ),{",".join(upserts)}
        SELECT new.blocks, new.indexes, {counted}
        FROM (SELECT array_agg(raw_block_id) AS blocks, array_agg(raw_index) AS indexes FROM inserted) AS new
    """


def _write_postgresql(
    rows: list[tuple[NormalizedEvent, bytes]], slots: list[tuple[int, int]], *, partitioned: bool
) -> set:
    """Returns the (block, index) slots of the rows inserted."""
    with connection.cursor() as cursor:
        cursor.execute(_pg_stage_sql())
        with cursor.cursor.copy(
            f"COPY {_STAGE_TABLE} ({', '.join(_STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types([_PG_TYPES.get(name, "text") for name in _STAGE_COLUMNS])
            for (event, text), slot in zip(rows, slots, strict=True):
                detail = candidates.detail_of(text) if candidates.wants_detail(event) else None
                critical = event.event_name in CRITICAL_EVENT_NAMES
                row: Sequence[Any] = _event_values(event) + (critical,) + slot + (detail,)
                if row[_CONTEXT_INDEX] is not None:
                    # orjson: a quarter of the COPY's CPU less than json.dumps, and jsonb stores the
                    # same value (the context's text is clean: no NUL, no lone surrogate).
                    values = list(row)
                    values[_CONTEXT_INDEX] = Jsonb(values[_CONTEXT_INDEX], orjson.dumps)
                    row = values
                copy.write_row(row)
        cursor.execute(_pg_insert_sql(partitioned))
        blocks, indexes = cursor.fetchone()[:2]
        cursor.execute(f"TRUNCATE {_STAGE_TABLE}")
    return set(zip(blocks or (), indexes or (), strict=True))


_event_values = operator.attrgetter(*EVENT_FIELDS)
_CONTEXT_INDEX = EVENT_FIELDS.index("encryption_context")
_TIME_INDEX = EVENT_FIELDS.index("event_time")
_NAME_INDEX = EVENT_FIELDS.index("event_name")
# SQLite allows 32766 bound parameters per statement.
_SQLITE_ROWS_PER_INSERT = 32766 // len(EVENT_COLUMNS)


def _sqlite_time(value: datetime) -> str:
    # Django's SQLite format: naive UTC, ISO with a space (datetime.__str__).
    return str(value.replace(tzinfo=None))


def _write_sqlite(rows: list[tuple[NormalizedEvent, bytes]], slots: list[tuple[int, int]]) -> set:
    """Returns the (block, index) slots of the rows inserted."""
    columns = ", ".join(EVENT_COLUMNS)
    placeholders = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"
    inserted: dict[tuple[int, int], int] = {}  # slot -> event id
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _SQLITE_ROWS_PER_INSERT):
            chunk = range(start, min(start + _SQLITE_ROWS_PER_INSERT, len(rows)))
            params: list[Any] = []
            for i in chunk:
                values = list(_event_values(rows[i][0]))
                values[_TIME_INDEX] = _sqlite_time(values[_TIME_INDEX])
                if values[_CONTEXT_INDEX] is not None:
                    values[_CONTEXT_INDEX] = json.dumps(values[_CONTEXT_INDEX], ensure_ascii=False)
                params.extend(values)
                params.append(values[_NAME_INDEX] in CRITICAL_EVENT_NAMES)
                params.extend(slots[i])
            cursor.execute(
                f"INSERT INTO {_EVENT_TABLE} ({columns}) VALUES {', '.join([placeholders] * len(chunk))} "
                f"ON CONFLICT {conflict_target(Event)} DO NOTHING RETURNING raw_block_id, raw_index, id",
                params,
            )
            inserted.update(((block, index), pk) for block, index, pk in cursor.fetchall())
        new = [
            (inserted[slot], event, text) for (event, text), slot in zip(rows, slots, strict=True) if slot in inserted
        ]
        for summary in SUMMARIES:
            _upsert_sqlite(cursor, summary, [event for _, event, _ in new])
    _write_candidates_sqlite(new)
    return set(inserted)


def _write_candidates_sqlite(new: list[tuple[int, NormalizedEvent, bytes]]) -> None:
    """The batch's alert candidates, as the PostgreSQL statement writes them (audits/candidates.py)."""
    events = [
        (pk, event, candidates.detail_of(text) if candidates.wants_detail(event) else "") for pk, event, text in new
    ]
    touched = {
        (event.event_time.replace(second=0, microsecond=0), event.recipient_account_id, event.region)
        for _, event, _ in events
        if event.quota_class and not event.own
    }
    totals = []
    if touched:
        low, high = min(t[0] for t in touched), max(t[0] for t in touched)
        totals = [
            row
            for row in QuotaMinute.objects.filter(minute__gte=low, minute__lte=high).values_list(
                "minute", "account_id", "region", "quota_class", "calls", "throttled", "first_seen", "last_seen"
            )
            if (row[0], row[1], row[2]) in touched
        ]
    AlertCandidate.objects.bulk_create(candidates.build(events, totals, candidates.quota_floors()))


def _upsert_sqlite(cursor, summary: Summary, events: list[NormalizedEvent]) -> None:
    if summary.counted:
        events = [event for event in events if summary.counted[1](event)]
    groups: dict[tuple, list] = {}
    for event in events:
        dims = tuple(dim.value(event) for dim in summary.dims)
        group = groups.get(dims)
        if group is None:
            group = groups[dims] = [event.event_time, event.event_time] + [0] * len(summary.counts)
        group[0] = min(group[0], event.event_time)
        group[1] = max(group[1], event.event_time)
        for i, count in enumerate(summary.counts, start=2):
            if count.test is None or count.test(event):
                group[i] += 1
    if not groups:
        return
    added = ", ".join(f"{column} = {column} + excluded.{column}" for column in summary.count_names)
    width = len(summary.dims) + len(summary.counts) + 2
    cursor.executemany(
        f"INSERT INTO {summary.table} ({summary.dim_columns}, {summary.count_columns}, first_seen, last_seen) "
        f"VALUES ({', '.join(['%s'] * width)}) "
        f"ON CONFLICT {conflict_target(summary.model)} DO UPDATE SET {added}, "
        "first_seen = min(first_seen, excluded.first_seen), last_seen = max(last_seen, excluded.last_seen)",
        [
            (*dims, *counts, _sqlite_time(first), _sqlite_time(last))
            for dims, (first, last, *counts) in sorted(groups.items())
        ],
    )
