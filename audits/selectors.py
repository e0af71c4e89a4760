"""Every read behind the analysts' pages.

Figures come from DailyRollup, aggregated in SQL. Event is read only for lists of individual
calls (the explorer, critical events, the raw record) and for the few per-key details that
rollups do not carry (encryption context, S3 bucket), always through an index and a LIMIT.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.utils import timezone

from .cloudtrail import CRITICAL_EVENT_NAMES, KEY_ID_RE
from .filters import EventFilter
from .models import DailyRollup, Event, IngestRun, Source

CRITICAL = sorted(CRITICAL_EVENT_NAMES)
FAILED = ~Q(error_code="")
AFTER_HOURS = Q(after_hours=True)
# A source whose newest successful pass is older than this is shown as lagging (passes run every 5 minutes).
STALE_AFTER = timedelta(minutes=30)

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


# --- overview ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    totals: dict[str, int]
    calls_per_day: list[dict[str, Any]]  # {day, operation, calls}
    failures_per_day: list[dict[str, Any]]  # {day, error_code, calls}
    top_keys: list[dict[str, Any]]
    critical_days: list[tuple[date, int]]  # newest first


def overview(f: EventFilter, *, top: int = 10) -> Overview:
    """Everything the overview shows, in three passes over the period's rollups.

    The first pass groups by the few low-cardinality dimensions (day, operation, error,
    after-hours) and Python derives the totals and both charts from that small result.
    """
    calls = failed = after_hours = critical = 0
    per_operation: Counter[tuple[date, str]] = Counter()
    per_error: Counter[tuple[date, str]] = Counter()
    critical_days: Counter[date] = Counter()
    rows = f.rollups().values_list("day", "operation", "error_code", "after_hours").annotate(calls=_sum())
    for day, operation, error_code, late, n in rows.order_by():
        calls += n
        per_operation[(day, operation)] += n
        if error_code:
            failed += n
            per_error[(day, error_code)] += n
        if late:
            after_hours += n
        if operation in CRITICAL_EVENT_NAMES:
            critical += n
            critical_days[day] += n
    keys = list(
        f.rollups()
        .exclude(key="")
        .values("key", "account_id", "region")
        .annotate(calls=_sum(), failed=_sum(FAILED), after_hours=_sum(AFTER_HOURS))
        .order_by("-calls", "key")
    )
    principals = f.rollups().exclude(principal="").values("principal").distinct().count()
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
        critical_days=sorted(critical_days.items(), reverse=True),
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


def latest_critical(f: EventFilter, limit: int = 10, *, days: list[tuple[date, int]] | None = None) -> list[Event]:
    return list(critical_events(f, need=limit, days=days)[:limit])


def critical_events(
    f: EventFilter, *, before: datetime | None = None, need: int = 50, days: list[tuple[date, int]] | None = None
) -> QuerySet[Event]:
    """Critical events (CRITICAL_EVENT_NAMES) under `f`, newest first, enough for `need` rows before `before`.

    Critical events can be rare among millions of Decrypts, so the rollups say from which day on
    the newest `need` of them lie, and the events are read from that day only.
    """
    if f.operation and f.operation not in CRITICAL_EVENT_NAMES:
        return Event.objects.none()
    operations = [f.operation] if f.operation else CRITICAL
    rollups = f.rollups().filter(operation__in=operations)
    if days is None:
        days = list(rollups.values("day").annotate(calls=_sum()).order_by("-day").values_list("day", "calls"))
    # The newest day may be cut by the cursor or a date-time `until`: its rollup count may include
    # later events, so it never counts towards `need`.
    partial_day = f.last_day if f.until and not f.until.is_date else None
    if before is not None:
        partial_day = before.astimezone(UTC).date()
    qs = f.events().filter(event_name__in=operations)
    seen = found = 0
    for day, calls in days:
        if partial_day and day > partial_day:
            continue
        found += calls
        seen += 0 if day == partial_day else calls
        if seen >= need:
            qs = qs.filter(event_time__gte=datetime(day.year, day.month, day.day, tzinfo=UTC))
            break
    else:
        if found == 0:
            return Event.objects.none()
    return qs.only(*LIST_FIELDS).order_by("-event_time", "-id")


@dataclass(frozen=True)
class SourceLag:
    kind: str
    account_id: str
    region: str
    last_status: str
    last_success: datetime | None
    error: str

    @property
    def failed(self) -> bool:
        return self.last_status == IngestRun.Status.FAILED

    @property
    def kind_label(self) -> str:
        return IngestRun.Kind(self.kind).label


@dataclass(frozen=True)
class Freshness:
    updated_at: datetime | None  # end of the newest successful pass
    problems: list[SourceLag]


def freshness(now: datetime | None = None) -> Freshness:
    """When data last arrived, and which configured (kind, account, region) scopes lag or last failed.

    Each scope costs two lookups on the run ledger's (kind, account, region, -started_at) index,
    however long the ledger grows.
    """
    now = now or timezone.now()
    succeeded = IngestRun.objects.filter(status=IngestRun.Status.SUCCEEDED)
    newest = succeeded.order_by("-id").values_list("finished_at", flat=True).first()
    problems = []
    for kind, account_id, region in _scopes():
        runs = IngestRun.objects.filter(kind=kind, account_id=account_id, region=region).order_by("-started_at")
        last = runs.exclude(status__in=[IngestRun.Status.RUNNING, IngestRun.Status.SKIPPED]).first()
        last_success = (
            runs.filter(status=IngestRun.Status.SUCCEEDED).values_list("finished_at", flat=True).first()
        )
        failed = last is not None and last.status == IngestRun.Status.FAILED
        if failed or last_success is None or last_success < now - STALE_AFTER:
            problems.append(
                SourceLag(kind, account_id, region, last.status if last else "", last_success, last.error if last else "")
            )
    return Freshness(newest, problems)


def _scopes() -> list[tuple[str, str, str]]:
    scopes = []
    for source in Source.objects.filter(enabled=True):
        for region in source.regions or []:
            if source.lookup_enabled:
                scopes.append((IngestRun.Kind.LOOKUP, source.account_id, region))
            if source.has_s3:
                scopes.append((IngestRun.Kind.S3, source.account_id, region))
    return scopes


# --- keys ----------------------------------------------------------------------------------------

KEY_SORTS = {
    "calls": "calls",
    "encrypt": "encrypt",
    "decrypt": "decrypt",
    "generate": "generate",
    "other": "other",
    "principals": "principals",
    "services": "services",
    "failed": "failed",
    "after_hours": "after_hours",
    "last_used": "last_used",
    "key": "key",
    "account": "account_id",
    "region": "region",
}


def keys_table(f: EventFilter, *, sort: str = "-calls") -> QuerySet:
    """One row per key: calls by operation family, principals, services, failures, last use."""
    descending = sort.startswith("-")
    column = KEY_SORTS.get(sort.lstrip("-"), "calls")
    generate = Q(operation__startswith="GenerateDataKey")
    named = Q(operation__in=["Encrypt", "Decrypt"]) | generate
    return (
        f.rollups()
        .exclude(key="")
        .values("key", "account_id", "region")
        .annotate(
            calls=_sum(),
            encrypt=_sum(Q(operation="Encrypt")),
            decrypt=_sum(Q(operation="Decrypt")),
            generate=_sum(generate),
            other=_sum(~named),
            principals=Count("principal", distinct=True, filter=~Q(principal="")),
            services=Count("service", distinct=True, filter=~Q(service="")),
            failed=_sum(FAILED),
            after_hours=_sum(AFTER_HOURS),
            last_used=Max("last_seen"),
        )
        .order_by(f"-{column}" if descending else column, "key")
    )


def keys_page(f: EventFilter, *, sort: str = "-calls", page: int | str = 1, per_page: int = 50) -> Page:
    result = Paginator(keys_table(f, sort=sort), per_page).get_page(page)
    result.object_list = with_aliases(list(result.object_list))
    return result


def alias_names() -> dict[str, str]:
    """Key ARN -> alias, from the inventory when it is installed and has run."""
    try:
        from inventory.selectors import alias_names as inventory_aliases
    except ImportError:
        return {}
    return inventory_aliases()


def with_aliases(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    aliases = alias_names() if rows else {}
    for row in rows:
        row["alias"] = aliases.get(row["key"], "")
    return rows


def resolve_key(key: str) -> str | None:
    """The key ARN the rollups know for a key ARN, bare key id, or other identifier; None if unknown."""
    key = key.strip()
    if not key:
        return None
    if KEY_ID_RE.match(key):
        # Try the ARNs the configured sources would produce before scanning the rollups.
        for source in Source.objects.all():
            for region in source.regions or []:
                arn = f"arn:aws:kms:{region}:{source.account_id}:key/{key}"
                if DailyRollup.objects.filter(key=arn).exists():
                    return arn
        return (
            DailyRollup.objects.filter(key__endswith=f":key/{key}").values_list("key", flat=True).first()
        )
    if DailyRollup.objects.filter(key=key).exists():
        return key
    return None


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
    rows = list(
        f.events().order_by("-event_time", "-id").values_list("encryption_context", "s3_bucket")[:size]
    )
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


class BadCursor(ValueError):
    pass


def encode_cursor(event: Event) -> str:
    text = f"{event.event_time.astimezone(UTC).isoformat()}|{event.pk}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, pk = text.split("|")
        parsed = datetime.fromisoformat(when)
        if parsed.tzinfo is None:
            raise ValueError("naive time")
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
    qs = qs.only(*LIST_FIELDS).order_by("-event_time", "-id")
    if cursor:
        when, pk = decode_cursor(cursor)
        qs = qs.filter(Q(event_time__lt=when) | Q(event_time=when, id__lt=pk))
    rows = list(qs[: per_page + 1])
    more = len(rows) > per_page
    rows = rows[:per_page]
    return EventPage(rows, encode_cursor(rows[-1]) if more else None)


