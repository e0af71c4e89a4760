"""Every read behind the analysts' pages.

Figures come from DailyRollup, aggregated in SQL, or from its summaries (KeyDay, OperationDay,
PrincipalDay, KeyPrincipalDay, KeyServiceDay) when the filter uses no dimension they lack: a
period's summary rows are thousands where its rollups are millions. Event is read only for lists
of individual calls (the explorer, critical events, the raw record) and for the few per-key details that
rollups do not carry (encryption context, S3 bucket), always through an index and a LIMIT.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import EmptyResultSet, FullResultSet
from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import Count, Max, Min, Model, Q, QuerySet, Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from inventory import selectors as inventory_selectors
from inventory.findings import known_accounts
from inventory.selectors import alias_names  # Key ARN -> alias, from the inventory (empty until it has run)
from kmsdash.dates import parse_day, parse_utc

from . import changes, rawcodec, rollups
from .cloudtrail import CRITICAL_EVENT_NAMES, GRANT_OPERATIONS, KEY_ID_RE
from .filters import EARLIEST, LATEST, EventFilter
from .models import (
    Checkpoint,
    DailyRollup,
    Event,
    IngestRun,
    KeyDay,
    KeyHour,
    KeyPrincipalDay,
    KeyServiceDay,
    OperationDay,
    PrincipalDay,
    Quarantine,
    RawBlock,
    Retention,
    Source,
)

CRITICAL = sorted(CRITICAL_EVENT_NAMES)
FAILED = ~Q(error_code="")
AFTER_HOURS = Q(after_hours=True)

# The columns lists of events show; the raw record is read only by the drawer.
LIST_FIELDS = (
    "id",
    "event_time",
    "event_name",
    "recipient_account_id",
    "region",
    "key",
    "principal",
    "principal_type",
    "session_name",
    "service",
    "source_ip",
    "user_agent",
    "error_code",
    "error_message",
    "after_hours",
)


def _sum(condition: Q | None = None) -> Sum:
    return Sum("count", filter=condition, default=0)


# --- one scan, several groupings -----------------------------------------------------------------


# The key measures (KeyDay's columns) as aggregates over DailyRollup rows and over KeyDay, in SQL
# that PostgreSQL and SQLite both accept.
def _measures(summary: rollups.Summary) -> dict[str, str]:
    return {count.column: summary.sum_sql(count) for count in rollups.KEY_MEASURES} | {"last_used": "MAX(last_seen)"}


_MEASURES = {summary.model: _measures(summary) for summary in rollups.SUMMARIES}
MEASURES = _MEASURES[DailyRollup]

# The rollup dimension each filter field compares (account and region: every table keeps them).
_FILTER_DIMS = {
    "key": "key",
    "principal": "principal",
    "service": "service",
    "operation": "operation",
    "error": "error_code",
    "after_hours": "after_hours",
}
# The filter fields each daily summary cannot answer (it does not keep that dimension). A summary
# that counts only some events (`where`) answers no filter of the pages.
_NOT_IN = {
    summary.model: tuple(name for name, dim in _FILTER_DIMS.items() if dim not in summary.dim_names)
    for summary in rollups.SUMMARIES[1:]
    if summary.where is None and rollups.DAY in summary.dims
}


def summary(f: EventFilter, model: type[Model]) -> QuerySet | None:
    """`model`'s rows under `f`, or None when `f` filters on a dimension `model` lacks (kmsdash's
    own calls included: only the rollup keeps them)."""
    if f.own or any(getattr(f, name) not in ("", None) for name in _NOT_IN[model]):
        return None
    return f.rollups(model._default_manager.all())


def grouped(qs: QuerySet, sets: list[tuple[str, ...]], measures: list[str]) -> list[list[dict]]:
    """For each grouping set, the rows of `qs` summed by those columns: [[{col..., measure...}], ...].

    On PostgreSQL this is ONE scan of the rollups (GROUP BY GROUPING SETS), which matters when
    a period holds hundreds of thousands of rollup rows; elsewhere, one GROUP BY per set.
    `qs` is over DailyRollup or one of its summaries.
    """
    compiler = qs.query.get_compiler(using=qs.db)
    try:
        where, params = compiler.compile(qs.query.where)
    except EmptyResultSet:  # e.g. qs.none(): nothing can match
        return [[] for _ in sets]
    except FullResultSet:  # no condition at all
        where, params = "", []
    where = f"WHERE {where}" if where else ""
    table = qs.model._meta.db_table
    columns = list(dict.fromkeys(c for group in sets for c in group))
    sql = _MEASURES[qs.model]
    aggregates = ", ".join(f"{sql[m]} AS {m}" for m in measures)
    connection = connections[qs.db]
    results: list[list[dict]] = [[] for _ in sets]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and len(sets) > 1:
            # GROUPING(c1..cn) has bit (n-1-i) set when column i is not grouped in that row's set.
            masks = {
                sum(1 << (len(columns) - 1 - i) for i, c in enumerate(columns) if c not in group): n
                for n, group in enumerate(sets)
            }
            groups = ", ".join("(" + ", ".join(group) + ")" for group in sets)
            cursor.execute(
                f"SELECT GROUPING({', '.join(columns)}), {', '.join(columns)}, {aggregates} "
                f"FROM {table} {where} GROUP BY GROUPING SETS ({groups})",
                params,
            )
            for row in cursor.fetchall():
                n = masks[row[0]]
                values = dict(zip(columns, row[1 : 1 + len(columns)], strict=True))
                record = {c: values[c] for c in sets[n]}
                record.update(zip(measures, row[1 + len(columns) :], strict=True))
                results[n].append(record)
        else:
            for n, group in enumerate(sets):
                cursor.execute(
                    f"SELECT {', '.join(group)}, {aggregates} FROM {table} {where} GROUP BY {', '.join(group)}",
                    params,
                )
                for row in cursor.fetchall():
                    record = dict(zip(group, row[: len(group)], strict=True))
                    record.update(zip(measures, row[len(group) :], strict=True))
                    results[n].append(record)
    for rows in results:
        for row in rows:
            _convert(row)
    return results


def _convert(row: dict) -> None:
    """Raw SQL returns the driver's types (SQLite: text dates, 0/1, text times): make them the ORM's."""
    for name, value in row.items():
        if name == "day" and isinstance(value, str):
            row[name] = parse_day(value)
        elif name == "after_hours":
            row[name] = bool(value)
        elif name == "last_used":
            if isinstance(value, str):
                row[name] = parse_utc(value)
        elif name in MEASURES:
            row[name] = int(value or 0)


# --- overview ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    totals: dict[str, int]
    calls_per_day: list[dict[str, Any]]  # {day, operation, calls}
    failures_per_day: list[dict[str, Any]]  # {day, error_code, calls}
    top_keys: list[dict[str, Any]]


def overview(f: EventFilter, *, top: int = 10) -> Overview:
    """Everything the overview shows, from one pass over the period's rollups.

    The pass groups by the low-cardinality dimensions (day, operation, error, after-hours), by
    key and by principal; the totals and both charts are derived from the small first grouping.
    """
    operation_days, key_days, principal_days = summary(f, OperationDay), summary(f, KeyDay), summary(f, PrincipalDay)
    if operation_days is not None and key_days is not None and principal_days is not None:
        (by_day,) = grouped(operation_days, [("day", "operation", "error_code", "after_hours")], ["calls"])
        (by_key,) = grouped(key_days.exclude(key=""), [_KEY], ["calls", "failed", "after_hours_calls"])
        principals = principal_days.exclude(principal="").values("principal").distinct().count()
    else:
        by_day, by_key, by_principal = grouped(
            f.rollups(),
            [("day", "operation", "error_code", "after_hours"), _KEY, ("principal",)],
            ["calls", "failed", "after_hours_calls"],
        )
        principals = sum(1 for row in by_principal if row["principal"])
    calls = failed = after_hours = critical = 0
    per_operation: Counter[tuple[date, str]] = Counter()
    per_error: Counter[tuple[date, str]] = Counter()
    for row in by_day:
        day, operation, n = row["day"], row["operation"], row["calls"]
        calls += n
        per_operation[(day, operation)] += n
        if row["error_code"]:
            failed += n
            per_error[(day, row["error_code"])] += n
        if row["after_hours"]:
            after_hours += n
        if operation in CRITICAL_EVENT_NAMES:
            critical += n
    keys = sorted((row for row in by_key if row["key"]), key=lambda row: (-row["calls"], row["key"]))
    return Overview(
        totals={
            "calls": calls,
            "failed": failed,
            "after_hours": after_hours,
            "critical": critical,
            "principals": principals,
            "keys": len(keys),
        },
        calls_per_day=[{"day": d, "operation": o, "calls": n} for (d, o), n in sorted(per_operation.items())],
        failures_per_day=[{"day": d, "error_code": e, "calls": n} for (d, e), n in sorted(per_error.items())],
        top_keys=with_aliases(keys[:top]),
    )


def totals(f: EventFilter) -> dict[str, int]:
    """The headline figures of the filtered period, in one aggregate over the rollups."""
    return f.rollups().aggregate(
        calls=_sum(),
        failed=_sum(FAILED),
        after_hours=_sum(AFTER_HOURS),
        critical=_sum(Q(operation__in=CRITICAL)),
        principals=Count("principal", distinct=True, filter=~Q(principal="")),
        keys=Count("key", distinct=True, filter=~Q(key="")),
    )


def calls_per_day(f: EventFilter) -> list[dict[str, Any]]:
    """[{day, operation, calls}] ordered by day."""
    return list(f.rollups().values("day", "operation").annotate(calls=_sum()).order_by("day", "operation"))


def calls_per_hour(f: EventFilter) -> list[dict[str, Any]] | None:
    """[{hour, calls, failed, after_hours_calls}] per UTC hour (its start) under `f`, from KeyHour,
    ordered by hour; None when `f` filters on a dimension KeyHour lacks (principal, service,
    operation, error, after-hours, search, kmsdash's own calls) or has no start.

    The window is `f`'s to the hour: from the hour holding its start to the one before its end.
    """
    if f.start is None or any((f.principal, f.service, f.operation, f.error, f.q, f.own)) or f.after_hours is not None:
        return None
    if f.errors:
        return []
    q = Q(hour__gte=f.start.replace(minute=0, second=0, microsecond=0))
    if f.end:
        q &= Q(hour__lt=f.end)
    if f.key:
        q &= Q(key__endswith=f":key/{f.key}") if KEY_ID_RE.match(f.key) else Q(key=f.key)
    if f.account:
        q &= Q(account_id=f.account)
    if f.region:
        q &= Q(region=f.region)
    return list(
        KeyHour.objects.filter(q)
        .values("hour")
        .annotate(calls=Sum("calls"), failed=Sum("failed"), after_hours_calls=Sum("after_hours_calls"))
        .order_by("hour")
    )


def latest_critical(f: EventFilter, limit: int = 10) -> list[Event]:
    """The latest important critical events (routine service grants left out)."""
    return list(critical_events(f, need=limit)[:limit])


# A grant that an AWS service creates or retires on the caller's behalf (invokedBy set) is routine
# (audits.cloudtrail.critical_class): hidden by default on the critical page and the overview's card.
ROUTINE_GRANT = Q(event_name__in=GRANT_OPERATIONS) & ~Q(service="")


def routine_critical_count(f: EventFilter) -> int:
    """How many routine service grants the period holds, from the daily rollup (whole UTC days)."""
    if f.operation and f.operation not in GRANT_OPERATIONS:
        return 0
    rows = f.rollups().filter(operation__in=GRANT_OPERATIONS).exclude(service="")
    return rows.aggregate(n=Sum("count"))["n"] or 0


# Look-back windows tried in turn before reading the whole period.
CRITICAL_WINDOWS = (timedelta(days=1), timedelta(days=7), timedelta(days=31))


def critical_events(
    f: EventFilter, *, cursor: tuple[datetime, int] | None = None, need: int = 50, routine: bool = False
) -> QuerySet[Event]:
    """Critical events (CRITICAL_EVENT_NAMES) under `f`, newest first; routine service grants only if `routine`.

    Bounded to the shortest recent window (before `cursor`, if any) that holds `need` of them,
    so that a page reads a day of events rather than a whole period of Decrypts.
    """
    if f.operation and f.operation not in CRITICAL_EVENT_NAMES:
        return Event.objects.none()
    operations = [f.operation] if f.operation else CRITICAL
    qs = f.events().filter(event_name__in=operations)
    if not routine:
        qs = qs.exclude(ROUTINE_GRANT)
    qs = qs.only(*LIST_FIELDS, "raw_block_id", "raw_index").order_by("-event_time", "-id")
    after_cursor = _after(cursor) if cursor else Q()
    anchor = cursor[0] if cursor else (f.end or timezone.now())
    for span in CRITICAL_WINDOWS:
        lower = anchor - span
        if f.start and lower <= f.start:
            break
        recent = qs.filter(event_time__gte=lower)
        if recent.filter(after_cursor)[:need].count() >= need:
            return recent
    return qs


def raw_records(events: list[Event]) -> dict[int, dict]:
    """event id -> its raw record, each block read and decompressed once."""
    slots = defaultdict(list)
    for event in events:
        if event.raw_block_id is not None:
            slots[event.raw_block_id].append(event)
    found: dict[int, dict] = {}
    blocks = list(slots)
    for start in range(0, len(blocks), 200):
        for pk, data in RawBlock.objects.filter(pk__in=blocks[start : start + 200]).values_list("pk", "data"):
            texts = rawcodec.decode_block(data)
            for event in slots[pk]:
                if 0 <= event.raw_index < len(texts) and texts[event.raw_index]:
                    record = json.loads(texts[event.raw_index])
                    if isinstance(record, dict):
                        found[event.pk] = record
    return found


def critical_changes(events: list[Event]) -> dict[int, str]:
    """event id -> what the critical event changed (audits.changes), from its raw record."""
    records = raw_records(events)
    exposing = any(e.event_name in changes.EXPOSING_OPERATIONS for e in events)
    known = known_accounts() if exposing else set()
    return {e.pk: changes.describe(e.event_name, records.get(e.pk), known) for e in events}


def _after(cursor: tuple[datetime, int]) -> Q:
    """Rows after `cursor` in (event_time desc, id desc) order."""
    when, pk = cursor
    return Q(event_time__lt=when) | Q(event_time=when, id__lt=pk)


# --- ingestion health ----------------------------------------------------------------------------

# A scheduled source runs every 5 minutes and reads up to 5 minutes behind: data half an hour behind
# means several runs in a row did not move it.
LAG_WARNING = timedelta(minutes=30)
QUARANTINE_RECENT = timedelta(days=7)
# Local file imports are run by hand: their age says nothing about health.
SCHEDULED_KINDS = (IngestRun.Kind.LOOKUP, IngestRun.Kind.S3)
_UNFINISHED = (IngestRun.Status.RUNNING, IngestRun.Status.SKIPPED)


@dataclass
class ScopeHealth:
    """How one (source kind, account, region) is doing.

    The one rule for "lagging": the data read so far (the scope's checkpoint, which moves only once a
    window or pass has committed whole; for a scope without one, the end of its last successful run)
    is more than LAG_WARNING behind now. "Failing": its last finished run failed."""

    kind: str
    account_id: str
    region: str
    last_run: IngestRun | None
    last_success_at: datetime | None
    last_failure: IngestRun | None
    high_watermark: datetime | None
    lag: timedelta | None
    last_finished_status: str = ""
    configured: bool = False  # an enabled source reads this scope

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
        return self.last_finished_status == IngestRun.Status.FAILED

    @property
    def lagging(self) -> bool:
        if self.kind not in SCHEDULED_KINDS:
            return False
        return self.lag is None or self.lag > LAG_WARNING

    @property
    def warning(self) -> bool:
        return self.failing or self.lagging


def ingestion_health(now: datetime | None = None) -> list[ScopeHealth]:
    """One row per (source kind, account, region) that has run, has a checkpoint, or is configured,
    in four queries however many scopes there are, each bounded by the number of scopes rather than
    the length of the run ledger (/metrics runs this on every scrape: `_latest_runs`).

    Lag is now minus the checkpoint's high watermark (how far behind the data is), or, for a
    source without checkpoints, now minus the end of its last successful run.
    """
    now = now or timezone.now()
    rows = _latest_runs()
    run_ids = {r[name] for r in rows.values() for name in ("last_run_id", "last_failure_id", "last_success_id")}
    runs = IngestRun.objects.in_bulk(run_ids - {None})
    for row in rows.values():
        success = runs.get(row["last_success_id"])
        row["last_success_at"] = success.finished_at if success else None
    watermarks = {(c.kind, c.account_id, c.region): c.high_watermark for c in Checkpoint.objects.all()}
    configured = {(str(kind), account, region) for kind, account, region in Source.objects.scopes()}

    health = []
    for scope in sorted(set(rows) | set(watermarks) | configured):
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
                last_finished_status=row.get("last_finished_status") or "",
                configured=scope in configured,
            )
        )
    return health


def _latest_runs() -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per scope of the run ledger: its newest run's id, the status of its newest finished run, and
    the ids of its newest failure and newest success; one statement.

    The scopes are found without reading the ledger: on PostgreSQL a skip scan of the
    run_scope_recent index (a recursive CTE that jumps from one scope to the next, one index probe
    each; PostgreSQL has no skip scan of its own before 18), on SQLite a DISTINCT over the same index
    (SQLite is for small installations). Each scope's answers then walk that index from its newest
    run, or the run_scope_failures partial index for the newest failure (failures are rare: walking
    the full index for one would read a scope's whole history). The newest success and finished
    run are found after at most as many rows as the scope's latest streak of failures or runs
    still running.
    """
    table = IngestRun._meta.db_table
    scope = "r.kind = s.kind AND r.account_id = s.account_id AND r.region = s.region"
    newest = "ORDER BY r.started_at DESC, r.id DESC LIMIT 1"
    connection = connections[IngestRun.objects.db]
    if connection.vendor == "postgresql":
        scopes = f"""
            (SELECT kind, account_id, region FROM {table} ORDER BY kind, account_id, region LIMIT 1)
            UNION ALL
            SELECT n.kind, n.account_id, n.region FROM scopes s CROSS JOIN LATERAL (
                SELECT r.kind, r.account_id, r.region FROM {table} r
                WHERE (r.kind, r.account_id, r.region) > (s.kind, s.account_id, s.region)
                ORDER BY r.kind, r.account_id, r.region LIMIT 1
            ) n"""
    else:
        scopes = f"SELECT DISTINCT kind, account_id, region FROM {table}"
    # The statuses are constants, written into the statement so PostgreSQL matches the partial index.
    failed, succeeded = IngestRun.Status.FAILED.value, IngestRun.Status.SUCCEEDED.value
    unfinished = ", ".join(f"'{status.value}'" for status in _UNFINISHED)
    sql = f"""
        WITH RECURSIVE scopes (kind, account_id, region) AS ({scopes})
        SELECT s.kind, s.account_id, s.region,
            (SELECT r.id FROM {table} r WHERE {scope} {newest}),
            (SELECT r.status FROM {table} r WHERE {scope} AND r.status NOT IN ({unfinished}) {newest}),
            (SELECT r.id FROM {table} r WHERE {scope} AND r.status = '{failed}' {newest}),
            (SELECT r.id FROM {table} r WHERE {scope} AND r.status = '{succeeded}' {newest})
        FROM scopes s"""
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {
            (kind, account, region): {
                "last_run_id": last_run,
                "last_finished_status": status,
                "last_failure_id": failure,
                "last_success_id": success,
            }
            for kind, account, region, last_run, status, failure, success in cursor.fetchall()
        }


@dataclass(frozen=True)
class Freshness:
    updated_at: datetime | None  # end of the newest successful pass
    problems: list[ScopeHealth]  # configured scopes that fail or lag


def freshness(now: datetime | None = None) -> Freshness:
    """When data last arrived, and which configured scopes lag or last failed (ingestion_health's rule)."""
    newest = (
        IngestRun.objects.filter(status=IngestRun.Status.SUCCEEDED)
        .order_by("-id")
        .values_list("finished_at", flat=True)
        .first()
    )
    problems = [scope for scope in ingestion_health(now) if scope.configured and scope.warning]
    return Freshness(newest, problems)


# --- first ingestion -----------------------------------------------------------------------------

# A first pass reads KMSDASH_*_INITIAL_DAYS back; scopes that have not caught up this long after
# their first run are behind, not starting (the overview's freshness warning says so).
FIRST_PASS_LIMIT = timedelta(days=2)


@dataclass(frozen=True)
class ScopeProgress:
    scope: ScopeHealth
    first_started_at: datetime | None  # the scope's first run
    progress: float | None  # share of its first window read, from its checkpoint
    ready_at: datetime | None  # when it should be caught up, at the pace so far

    @property
    def percent(self) -> int | None:
        return None if self.progress is None else int(self.progress * 100)


@dataclass(frozen=True)
class FirstIngestion:
    """What the pages say before the configured sources have caught up once.

    state: "unconfigured" (no source, no data), "queued" (no run has started), "running", "failed"
    (every scope's last run failed, none is running)."""

    state: str
    scopes: list[ScopeProgress]
    started_at: datetime | None
    events: int
    ready_at: datetime | None  # the latest scope's estimate, or None when one is unknown
    next_start: datetime  # the scheduler's next tick
    error: str = ""

    @property
    def pending(self) -> bool:
        """Sources are configured and their first pass has not finished: empty lists say so."""
        return self.state != "unconfigured"


def first_ingestion(now: datetime | None = None) -> FirstIngestion | None:
    """The first ingestion's state, or None once any configured scope has caught up (one indexed
    query on the small checkpoint table in that, the usual, case) or after FIRST_PASS_LIMIT.

    Progress of a scope is how far its checkpoint has moved from where its first window started to
    now (less the LookupEvents settle time); its ready time extrapolates the pace since its first run.
    """
    now = now or timezone.now()
    caught_up = Checkpoint.objects.filter(kind__in=SCHEDULED_KINDS, high_watermark__gte=now - LAG_WARNING)
    if caught_up.exists():
        return None
    minute = now.replace(second=0, microsecond=0)
    next_start = minute + timedelta(minutes=-minute.minute % 5 or 5)
    if not Source.objects.filter(enabled=True).exists():
        if DailyRollup.objects.exists():
            return None  # imported files, nothing scheduled to wait for
        return FirstIngestion("unconfigured", [], None, 0, None, next_start)
    runs = IngestRun.objects.filter(kind__in=SCHEDULED_KINDS)
    firsts = {
        (r["kind"], r["account_id"], r["region"]): r
        for r in runs.order_by()
        .values("kind", "account_id", "region")
        .annotate(started=Min("started_at"), origin=Min("window_start"))
    }
    started_at = min((r["started"] for r in firsts.values()), default=None)
    if started_at is not None and started_at < now - FIRST_PASS_LIMIT:
        return None
    settle = timedelta(minutes=settings.KMSDASH_LOOKUP_SETTLE_MINUTES)
    health = [scope for scope in ingestion_health(now) if scope.configured]
    if any(not scope.lagging for scope in health):
        return None  # caught up by the end of a successful run (a source without checkpoints)
    scopes = []
    for scope in health:
        first = firsts.get((scope.kind, scope.account_id, scope.region), {})
        origin, first_started = first.get("origin"), first.get("started")
        progress = ready_at = None
        if origin is not None and first_started is not None:
            span = (now - settle - origin).total_seconds()
            read = ((scope.high_watermark or origin) - origin).total_seconds()
            progress = min(max(read / span, 0.0), 1.0) if span > 0 else 1.0
            if progress > 0:
                ready_at = first_started + (now - first_started) / progress
        scopes.append(ScopeProgress(scope, first_started, progress, ready_at))
    if not firsts:
        state = "queued"
    elif scopes and all(p.scope.last_run and p.scope.last_run.status == IngestRun.Status.FAILED for p in scopes):
        state = "failed"
    else:
        state = "running"
    estimates = [p.ready_at for p in scopes if p.ready_at]
    failure = max(
        (p.scope.last_failure for p in scopes if p.scope.last_failure), key=lambda r: r.started_at, default=None
    )
    return FirstIngestion(
        state=state,
        scopes=scopes,
        started_at=started_at,
        events=runs.aggregate(n=Sum("events_new", default=0))["n"],
        # Known only when every scope has an estimate.
        ready_at=max(estimates) if scopes and len(estimates) == len(scopes) else None,
        next_start=next_start,
        error=failure.error if failure and state == "failed" else "",
    )


def recent_quarantine_count(now: datetime | None = None) -> int:
    since = (now or timezone.now()) - QUARANTINE_RECENT
    return Quarantine.objects.filter(created_at__gte=since).count()


OWN_CALL_DAYS = 7


def own_calls_per_day(now: datetime | None = None, days: int = OWN_CALL_DAYS) -> list[dict[str, Any]]:
    """kmsdash's own calls per (account, region) over the last `days` UTC days (today included):
    [{account_id, region, calls, failed, per_day}], per_day the mean over those days."""
    today = (now or timezone.now()).astimezone(UTC).date()
    rows = (
        DailyRollup.objects.filter(own=True, day__gt=today - timedelta(days=days))
        .values("account_id", "region")
        .annotate(calls=_sum(), failed=_sum(~Q(error_code="")))
        .order_by("account_id", "region")
    )
    return [{**row, "per_day": round(row["calls"] / days)} for row in rows]


@dataclass
class RetentionStatus:
    days: int  # 0: all events kept
    mark: Retention | None  # None before the first purge


def retention() -> RetentionStatus:
    return RetentionStatus(settings.KMSDASH_EVENT_RETENTION_DAYS, Retention.objects.order_by("pk").first())


def sources() -> QuerySet[Source]:
    return Source.objects.all()


# --- keys ----------------------------------------------------------------------------------------

KEY_SORTS = (
    "calls",
    "encrypt",
    "decrypt",
    "generate",
    "other",
    "principals",
    "services",
    "failed",
    "after_hours_calls",
    "last_used",
    "key",
    "account_id",
    "region",
)
_KEY = ("key", "account_id", "region")


REACH = ("principals", "services")
_KEY_MEASURES = ["calls", "encrypt", "decrypt", "generate", "failed", "after_hours_calls", "last_used"]


def keys_table(f: EventFilter, *, sort: str = "-calls") -> list[dict[str, Any]]:
    """One row per key: calls by operation family, failures, after-hours, last use, sorted.

    Unique principals and services ("reach") cost a wider grouping: they are only counted here
    when the table is sorted by them, otherwise by `add_reach` for the rows on show.
    """
    column = sort.lstrip("-") if sort.lstrip("-") in KEY_SORTS else "calls"
    rollups = f.rollups().exclude(key="")
    key_days = summary(f, KeyDay)
    if column not in REACH and key_days is not None:
        (rows,) = grouped(key_days.exclude(key=""), [_KEY], _KEY_MEASURES)
    elif column in REACH:
        rows, by_principal, by_service = grouped(
            rollups, [_KEY, (*_KEY, "principal"), (*_KEY, "service")], _KEY_MEASURES
        )
        _count_reach(rows, by_principal, by_service)
    else:
        (rows,) = grouped(rollups, [_KEY], _KEY_MEASURES)
    for row in rows:
        row["other"] = row["calls"] - row["encrypt"] - row["decrypt"] - row["generate"]
    rows.sort(key=lambda row: row["key"])
    rows.sort(key=lambda row: (row[column] is not None, row[column]), reverse=sort.startswith("-"))
    return rows


def add_reach(f: EventFilter, rows: list[dict[str, Any]]) -> None:
    """Count unique principals and services of `rows` (keys) that lack them, through the key index."""
    missing = [row for row in rows if "principals" not in row]
    if not missing:
        return
    keys = {row["key"] for row in missing}
    principals, services = summary(f, KeyPrincipalDay), summary(f, KeyServiceDay)
    by_principal: Iterable[dict[str, Any]]
    by_service: Iterable[dict[str, Any]]
    if principals is not None and services is not None:
        # DISTINCT rather than a sum: answered from the summaries' (key, day, ...) unique indexes alone.
        by_principal = principals.filter(key__in=keys).values(*_KEY, "principal").distinct()
        by_service = services.filter(key__in=keys).values(*_KEY, "service").distinct()
    else:
        _, by_principal, by_service = grouped(
            f.rollups().filter(key__in=keys), [_KEY, (*_KEY, "principal"), (*_KEY, "service")], ["calls"]
        )
    _count_reach(missing, by_principal, by_service)


def _count_reach(
    rows: list[dict[str, Any]], by_principal: Iterable[dict[str, Any]], by_service: Iterable[dict[str, Any]]
) -> None:
    principals = Counter(tuple(r[c] for c in _KEY) for r in by_principal if r["principal"])
    services = Counter(tuple(r[c] for c in _KEY) for r in by_service if r["service"])
    for row in rows:
        scope = tuple(row[c] for c in _KEY)
        row["principals"] = principals[scope]
        row["services"] = services[scope]


def keys_page(f: EventFilter, *, sort: str = "-calls", page: int | str = 1, per_page: int = 50) -> Page:
    result = Paginator(keys_table(f, sort=sort), per_page).get_page(page)
    rows = list(result.object_list)
    add_reach(f, rows)
    result.object_list = with_aliases(rows)
    return result


def with_aliases(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    aliases = alias_names() if rows else {}
    for row in rows:
        row["alias"] = aliases.get(row["key"], "")
    return rows


def resolve_key(key: str) -> str | None:
    """The key ARN for a key ARN, bare key id or other identifier, from the rollups, else the inventory.

    Exactly as given: identifiers are caller-chosen text, and " alias/x" or "alias/x\u2028" is
    another key than "alias/x" (stripping them led one key's URL to another key's page)."""
    if not key:
        return None
    if KEY_ID_RE.match(key):
        # Try the ARNs the configured sources would produce before scanning the rollups.
        for source in Source.objects.all():
            for region in source.regions or []:
                arn = f"arn:aws:kms:{region}:{source.account_id}:key/{key}"
                if DailyRollup.objects.filter(key=arn).exists():
                    return arn
        found = DailyRollup.objects.filter(key__endswith=f":key/{key}").values_list("key", flat=True).first()
        return found or _inventory_arn(key)
    if DailyRollup.objects.filter(key=key).exists():
        return key
    return _inventory_arn(key)


def _inventory_arn(key: str) -> str | None:
    """A key the inventory knows (by ARN, id or alias) though no call to it was recorded."""
    found = inventory_selectors.resolve_key(key)
    return found.arn if found is not None else None


# --- key detail ----------------------------------------------------------------------------------

SAMPLE_SIZE = 5000
TOP = 20


def key_principals(f: EventFilter, limit: int = TOP) -> list[dict[str, Any]]:
    return list(
        f.rollups()
        .values("principal")
        .annotate(
            calls=_sum(),
            failed=_sum(FAILED),
            after_hours=_sum(AFTER_HOURS),
            first_seen=Min("first_seen"),
            last_seen=Max("last_seen"),
        )
        .order_by("-calls", "principal")[:limit]
    )


def key_services(f: EventFilter, limit: int = TOP) -> list[dict[str, Any]]:
    return list(
        f.rollups()
        .exclude(service="")
        .values("service")
        .annotate(calls=_sum(), failed=_sum(FAILED), last_seen=Max("last_seen"))
        .order_by("-calls", "service")[:limit]
    )


def error_codes(f: EventFilter, limit: int = TOP) -> list[dict[str, Any]]:
    return list(
        f.rollups()
        .filter(FAILED)
        .values("error_code")
        .annotate(calls=_sum(), last_seen=Max("last_seen"))
        .order_by("-calls", "error_code")[:limit]
    )


def unusual_calls(f: EventFilter, limit: int = TOP) -> list[dict[str, Any]]:
    """Failed or after-hours calls grouped by operation, principal and error."""
    return list(
        f.rollups()
        .filter(FAILED | AFTER_HOURS)
        .values("operation", "principal", "error_code", "after_hours")
        .annotate(calls=_sum(), last_seen=Max("last_seen"))
        .order_by("-calls", "operation", "principal")[:limit]
    )


@dataclass(frozen=True)
class ContextSample:
    size: int  # events read
    contexts: list[tuple[str, str, int]]  # (context key, value, calls)
    buckets: list[tuple[str, int]]


def context_sample(f: EventFilter, *, size: int = SAMPLE_SIZE, limit: int = TOP) -> ContextSample:
    """Encryption-context pairs and S3 buckets among the newest `size` calls under `f`.

    Neither is a rollup dimension (contexts are unbounded), so they are counted over a bounded
    sample read through the (key, event_time) index.
    """
    rows = list(f.events().order_by("-event_time", "-id").values_list("encryption_context", "s3_bucket")[:size])
    pairs: Counter[tuple[str, str]] = Counter()
    buckets: Counter[str] = Counter()
    for context, bucket in rows:
        if isinstance(context, dict):
            for name, value in context.items():
                pairs[(str(name), value if isinstance(value, str) else repr(value))] += 1
        if bucket:
            buckets[bucket] += 1
    return ContextSample(
        size=len(rows),
        contexts=[(name, value, n) for (name, value), n in pairs.most_common(limit)],
        buckets=buckets.most_common(limit),
    )


# --- events explorer -----------------------------------------------------------------------------

# The summaries tried for the explorer's pre-check, smallest first; DailyRollup answers every filter.
_SPAN_SOURCES = (OperationDay, PrincipalDay, KeyDay, KeyServiceDay, KeyPrincipalDay)
_DIMENSION_FILTERS = (*_FILTER_DIMS, "account", "region")


def _matching_days(f: EventFilter) -> list[dict[str, Any]] | None:
    """Per UTC day of the window, newest first: how many events match `f`'s dimensions, and the
    first and last seen, from the smallest summary that answers them; None without such a filter."""
    if f.errors or not any(getattr(f, name) not in ("", None) for name in _DIMENSION_FILTERS):
        return None
    model, rows = next(
        ((model, rows) for model in _SPAN_SOURCES if (rows := summary(f, model)) is not None), (DailyRollup, None)
    )
    if rows is None:
        rows = f.rollups()
    count = "calls" if model is KeyDay else "count"
    return list(
        rows.values("day").annotate(n=Sum(count), first=Min("first_seen"), last=Max("last_seen")).order_by("-day")
    )


def _narrowed(f: EventFilter, days: list[dict[str, Any]] | None) -> QuerySet[Event]:
    qs = f.events()
    if days is None:
        return qs
    if not days:
        return qs.none()
    if f.error and f.error != "none":
        # Lets PostgreSQL read only failed events, through the partial index event_failed_time_id.
        qs = qs.filter(FAILED)
    return qs.filter(event_time__gte=min(d["first"] for d in days), event_time__lte=max(d["last"] for d in days))


def explorer_events(f: EventFilter) -> QuerySet[Event]:
    """The explorer's events under `f`, narrowed first by the summaries.

    A filter on a dimension the summaries keep (key, principal, service, operation, error, after
    hours, account, region) reads the smallest summary that answers it for the first and last time
    a matching event was seen in the window: nothing there means no event (answered without
    touching the event table), and the event query then scans only that span instead of the whole
    window. Free text (`q`) has no summary: it is bounded by the window and the statement timeout.
    """
    return _narrowed(f, _matching_days(f))


def explorer_page(f: EventFilter, cursor: str | None = None, per_page: int = 50) -> EventPage:
    """One page of `explorer_events(f)` (see events_page), reading only the newest days that hold it.

    The summaries count the matches per day: the page first reads only from the newest day at
    which they add up to a page and one more event. That result is exact whenever it is a full
    page (every row it skipped is older than all it read); a short one (the summaries also count
    events a search text excludes, purged ones, or ones outside a date-time bound) is read again
    over the whole span. Raises BadCursor like events_page.
    """
    days = _matching_days(f)
    qs = _narrowed(f, days)
    if days:
        before = decode_cursor(cursor)[0].date() if cursor else None
        total = 0
        for day in days:
            if before is not None and day["day"] > before:
                continue
            total += day["n"]
            if total > per_page:
                floor = datetime.combine(day["day"], datetime.min.time(), tzinfo=UTC)
                page = events_page(qs.filter(event_time__gte=floor), cursor, per_page)
                if page.next_cursor is not None:
                    return page
                break
    return events_page(qs, cursor, per_page)


class BadCursor(ValueError):
    pass


def encode_cursor(event: Event) -> str:
    text = f"{event.event_time.astimezone(UTC).isoformat()}|{event.pk}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, pk = text.split("|")
        parsed = parse_datetime(when)
        if parsed is None or parsed.tzinfo is None:
            raise ValueError("not an aware ISO time")
        if not EARLIEST <= parsed < LATEST:
            raise ValueError("time out of range")
        return parsed, int(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadCursor("The page cursor is not valid; showing the first page.") from exc


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    next_cursor: str | None


def events_page(qs: QuerySet[Event], cursor: str | None = None, per_page: int = 50) -> EventPage:
    """One page of `qs` by (event_time desc, id desc), after `cursor`: keyset pagination, no OFFSET.

    Raises BadCursor for a cursor that was not made by encode_cursor.
    """
    qs = qs.only(*LIST_FIELDS, "raw_block_id", "raw_index").order_by("-event_time", "-id")
    if cursor:
        qs = qs.filter(_after(decode_cursor(cursor)))
    rows = list(qs[: per_page + 1])
    more = len(rows) > per_page
    rows = rows[:per_page]
    return EventPage(rows, encode_cursor(rows[-1]) if more else None)
