"""Reads for the capacity page, quota_report and the two alert kinds.

Rates, peaks and throttled calls come from the per-minute request-quota summary (audits.QuotaMinute).
A call's rate is read the way AWS's own `AWS/Usage CallCount` metric is: a minute's calls / 60.

Who made a peak minute's calls (keys, principals, services, data-key callers) is read from that
minute's events: one minute of one account and region, through the events' time index. A summary
per key, principal and service as well would have cost about 570 B per event where minutes hold few
calls (bench/ingest_bench.py --compare-quota-summaries), more than the events' own row. Once the
retention purge has removed a minute's events, its callers are no longer known (its rate is).

Keys in a custom key store (inventory origin AWS_CLOUDHSM or EXTERNAL_KEY_STORE) are known only to
the inventory, which may learn of them after their calls landed; so their calls are classed
symmetric at ingestion (as they are: those keys are symmetric, and their calls count against the
symmetric quota too) and counted here, when read, from their events (through the per-key time
index; such keys are few, and each store is throttled at 1,800/s) against the custom-key-store
quota of their account and region. That quota is per key store; it is judged here for all the key
stores of an account and region together (exact with one store, cautious with more).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet, Sum, Window
from django.db.models.functions import RowNumber, Trunc

from audits.cloudtrail import CUSTOM_KEY_STORE, SYMMETRIC
from audits.models import Event, QuotaMinute
from inventory.models import Key

from . import quotas

CUSTOM_KEY_STORE_ORIGINS = ("AWS_CLOUDHSM", "EXTERNAL_KEY_STORE")
TOP = 5
MINUTE = timedelta(minutes=1)
DATA_KEY_OPERATIONS = ("GenerateDataKey", "Decrypt")  # what a data-key cache answers


def per_second(calls: int | float) -> float:
    """A minute's calls as requests per second, with one decimal (how every rate is shown)."""
    return round(calls / 60, 1)


def iso_minute(minute: datetime) -> str:
    return minute.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00Z")


def quota_for(account: str, region: str, quota_class: str) -> float | None:
    return quotas.quota(account, region, quota_class, settings.KMSDASH_KMS_QUOTAS)


def custom_store_keys() -> set[str]:
    return set(Key.objects.filter(origin__in=CUSTOM_KEY_STORE_ORIGINS).values_list("arn", flat=True))


def _window(qs: QuerySet, start: datetime | None, end: datetime | None, account: str, region: str) -> QuerySet:
    if start is not None:
        qs = qs.filter(minute__gte=start)
    if end is not None:
        qs = qs.filter(minute__lt=end)
    if account:
        qs = qs.filter(account_id=account)
    if region:
        qs = qs.filter(region=region)
    return qs


@dataclass
class Peak:
    """The busiest minute of one (account, region, class) in a bucket (a day, an hour, the window)."""

    account: str
    region: str
    quota_class: str
    minute: datetime
    calls: int
    throttled: int  # in that minute
    bucket: datetime | None = None

    @property
    def rate(self) -> float:
        return per_second(self.calls)

    @property
    def quota(self) -> float | None:
        return quota_for(self.account, self.region, self.quota_class)

    @property
    def share(self) -> float | None:
        """The peak rate as a share of the quota (unrounded)."""
        quota = self.quota
        return self.calls / 60 / quota if quota else None

    @property
    def percent(self) -> float | None:
        share = self.share
        return None if share is None else round(100 * share, 1)

    @property
    def iso(self) -> str:
        return iso_minute(self.minute)


def _bucket(minute: datetime, by: str | None) -> datetime | None:
    if by == "day":
        return minute.replace(hour=0, minute=0, second=0, microsecond=0)
    if by == "hour":
        return minute.replace(minute=0, second=0, microsecond=0)
    return None


def custom_store_minutes(
    start: datetime | None, end: datetime | None, account: str = "", region: str = "", *, keys: set[str] | None = None
) -> list[tuple[str, str, datetime, int, int]]:
    """(account, region, minute, calls, throttled) of the custom-key-store quota: symmetric calls
    on keys in a custom key store, plus the calls classed custom-key-store at ingestion."""
    keys = custom_store_keys() if keys is None else keys
    rows = list(
        _window(QuotaMinute.objects.filter(quota_class=CUSTOM_KEY_STORE), start, end, account, region).values_list(
            "account_id", "region", "minute", "calls", "throttled"
        )
    )
    if keys:
        events = Event.objects.filter(key__in=keys, quota_class=SYMMETRIC)
        if start is not None:
            events = events.filter(event_time__gte=start)
        if end is not None:
            events = events.filter(event_time__lt=end)
        if account:
            events = events.filter(recipient_account_id=account)
        if region:
            events = events.filter(region=region)
        rows.extend(
            (acc, reg, minute.astimezone(UTC), n, t)
            for acc, reg, minute, n, t in events.annotate(minute=Trunc("event_time", "minute", tzinfo=UTC))
            .values("recipient_account_id", "region", "minute")
            .annotate(n=Count("id"), t=Count("id", filter=Q(error_code="ThrottlingException")))
            .order_by()
            .values_list("recipient_account_id", "region", "minute", "n", "t")
        )
    summed: dict[tuple[str, str, datetime], list[int]] = defaultdict(lambda: [0, 0])
    for acc, reg, minute, calls, throttled in rows:
        summed[(acc, reg, minute)][0] += calls
        summed[(acc, reg, minute)][1] += throttled
    return [(acc, reg, minute, n, t) for (acc, reg, minute), (n, t) in summed.items()]


def peaks(
    start: datetime | None, end: datetime | None, account: str = "", region: str = "", *, by: str | None = None
) -> list[Peak]:
    """The peak minute of every (account, region, class) with calls, per `by` ("day", "hour") or over
    the whole window (None): ordered by scope, then bucket. Ties go to the earliest minute."""
    qs = _window(QuotaMinute.objects.exclude(quota_class=CUSTOM_KEY_STORE), start, end, account, region)
    partition: list[Any] = [F("account_id"), F("region"), F("quota_class")]
    if by:
        partition.append(Trunc("minute", by, tzinfo=UTC))
    rows = (
        qs.annotate(rank=Window(RowNumber(), partition_by=partition, order_by=[F("calls").desc(), F("minute").asc()]))
        .filter(rank=1)
        .values_list("account_id", "region", "quota_class", "minute", "calls", "throttled")
    )
    found = [Peak(a, r, c, m, n, t, _bucket(m, by)) for a, r, c, m, n, t in rows]
    # The custom-key-store quota, read through the inventory (few keys): folded here.
    best: dict[tuple[str, str, datetime | None], Peak] = {}
    for acc, reg, minute, calls, throttled in custom_store_minutes(start, end, account, region):
        bucket = _bucket(minute, by)
        current = best.get((acc, reg, bucket))
        if current is None or (calls, -minute.timestamp()) > (current.calls, -current.minute.timestamp()):
            best[(acc, reg, bucket)] = Peak(acc, reg, CUSTOM_KEY_STORE, minute, calls, throttled, bucket)
    found.extend(best.values())
    epoch = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda p: (p.account, p.region, p.quota_class, p.bucket or epoch))
    return found


def throttled_totals(
    start: datetime | None, end: datetime | None, account: str = "", region: str = ""
) -> dict[tuple[str, str, str], int]:
    """ThrottlingException calls per (account, region, class) in the window."""
    rows = (
        _window(QuotaMinute.objects.exclude(quota_class=CUSTOM_KEY_STORE), start, end, account, region)
        .values("account_id", "region", "quota_class")
        .annotate(t=Sum("throttled"))
        .order_by()
        .values_list("account_id", "region", "quota_class", "t")
    )
    found = {(a, r, c): t for a, r, c, t in rows}
    for acc, reg, _, _, throttled in custom_store_minutes(start, end, account, region):
        found[(acc, reg, CUSTOM_KEY_STORE)] = found.get((acc, reg, CUSTOM_KEY_STORE), 0) + throttled
    return found


def throttled_per_minute(
    start: datetime | None, end: datetime | None, account: str = "", region: str = ""
) -> dict[tuple[str, str], list[tuple[datetime, int]]]:
    """ThrottlingException calls per minute of each (account, region), every class together; only
    the minutes that had some."""
    rows = (
        _window(
            QuotaMinute.objects.exclude(quota_class=CUSTOM_KEY_STORE).filter(throttled__gt=0),
            start,
            end,
            account,
            region,
        )
        .values("account_id", "region", "minute")
        .annotate(t=Sum("throttled"))
        .order_by("account_id", "region", "minute")
        .values_list("account_id", "region", "minute", "t")
    )
    found: dict[tuple[str, str], list[tuple[datetime, int]]] = defaultdict(list)
    for acc, reg, minute, throttled in rows:
        found[(acc, reg)].append((minute, throttled))
    return dict(found)


@dataclass
class Callers:
    """Who made a minute's calls of one quota: the top keys, principals and calling services."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    principals: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)


def _minute_events(peak: Peak, keys: set[str] | None = None) -> QuerySet[Event]:
    """The events of the peak's minute that count against its quota."""
    rows = Event.objects.filter(
        event_time__gte=peak.minute,
        event_time__lt=peak.minute + MINUTE,
        recipient_account_id=peak.account,
        region=peak.region,
    )
    if peak.quota_class == CUSTOM_KEY_STORE:
        keys = custom_store_keys() if keys is None else keys
        # Symmetric calls on the stores' keys; GenerateRandom in a store has no key.
        return rows.filter(Q(quota_class=SYMMETRIC, key__in=keys) | Q(quota_class=CUSTOM_KEY_STORE))
    return rows.filter(quota_class=peak.quota_class)


def _top(rows: QuerySet[Event], column: str, limit: int) -> list[dict[str, Any]]:
    return [
        {column: value, "calls": calls, "rate": per_second(calls)}
        for value, calls in rows.values(column)
        .annotate(n=Count("id"))
        .order_by("-n", column)
        .values_list(column, "n")[:limit]
    ]


def peak_callers(peak: Peak, limit: int = TOP) -> Callers:
    rows = _minute_events(peak)
    return Callers(_top(rows, "key", limit), _top(rows, "principal", limit), _top(rows, "service", limit))


@dataclass
class CacheCandidate:
    principal: str
    key: str
    service: str
    data_key_calls: int
    saved_rate: float  # requests/s a data-key cache answering `hit_rate` of them would spare


def cache_candidates(peak: Peak, *, hit_rate: float | None = None, limit: int = TOP) -> list[CacheCandidate]:
    """The GenerateDataKey and Decrypt callers of a symmetric peak minute a data-key cache (e.g. the
    AWS Encryption SDK's caching materials manager) would relieve most, with the rate it would save."""
    rate = float(settings.KMSDASH_DATA_KEY_CACHE_HIT_RATE if hit_rate is None else hit_rate)
    rows = (
        _minute_events(peak)
        .filter(event_name__in=DATA_KEY_OPERATIONS)
        .values("principal", "key", "service")
        .annotate(n=Count("id"))
        .order_by("-n", "principal", "key")
        .values_list("principal", "key", "service", "n")[:limit]
    )
    return [CacheCandidate(p, k, s, n, round(n * rate / 60, 1)) for p, k, s, n in rows]


def report(
    start: datetime | None, end: datetime | None, account: str = "", region: str = "", *, limit: int = TOP
) -> dict[str, list[dict[str, Any]]]:
    """quota_report's shape: every (account, region, class) with calls in the window, its quota,
    its peak minute and rate, the window's ThrottlingException calls, and the peak minute's top
    keys and principals."""
    throttled = throttled_totals(start, end, account, region)
    scopes = []
    for peak in peaks(start, end, account, region):
        callers = peak_callers(peak, limit)
        quota = peak.quota
        scopes.append(
            {
                "account": peak.account,
                "region": peak.region,
                "class": peak.quota_class,
                "quota": None if quota is None else round(quota, 1),
                "peak_rate": peak.rate,
                "peak_minute": iso_minute(peak.minute),
                "throttled": throttled.get((peak.account, peak.region, peak.quota_class), 0),
                "top_keys": callers.keys,
                "top_principals": callers.principals,
            }
        )
    return {"scopes": scopes}


CSV_HEADER = (
    "account",
    "region",
    "class",
    "quota",
    "peak_rate",
    "peak_minute",
    "throttled",
    "top_keys",
    "top_principals",
)


def report_csv_rows(data: dict[str, list[dict[str, Any]]]) -> Iterable[list[Any]]:
    """One row per scope; the top keys and principals as "name (rate/s)" joined with "; "."""
    for scope in data["scopes"]:
        yield [
            *(scope[name] for name in CSV_HEADER[:7]),
            "; ".join(f"{k['key']} ({k['rate']}/s)" for k in scope["top_keys"]),
            "; ".join(f"{p['principal']} ({p['rate']}/s)" for p in scope["top_principals"]),
        ]
