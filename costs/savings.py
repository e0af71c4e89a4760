"""The savings finder: S3 Bucket Keys, data-key caching, idle keys; each with a monthly amount.

Amounts are estimates at list prices, before the free tier, so they are upper bounds: the page
says so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Max, Sum

from audits.models import BucketDay, DailyRollup

from .estimate import KeyFacts, load_key_facts
from .prices import prices, request_price_name

DAYS_PER_MONTH = Decimal("30.4")
# S3 activity is read from the bucket summary (BucketDay): over a short window, for a few buckets.
BUCKET_WINDOW_DAYS = 7
BUCKET_LIMIT = 20
BUCKET_KEY_SAVING = Decimal("0.99")  # "up to 99 percent" fewer KMS requests
# Data-key caching pays off for callers with many, steady GenerateDataKey/Decrypt calls.
CACHING_WINDOW_DAYS = 14
CACHING_MIN_DAILY = 10_000
CACHING_STEADY_SHARE = Decimal("0.8")  # active on at least 80% of the window's days
CACHEABLE_OPERATIONS = ("GenerateDataKey", "Decrypt")


@dataclass
class BucketSaving:
    bucket: str
    requests: int  # in the window
    names_objects: bool  # False: every context of the window names the bucket, Bucket Keys are on
    monthly_requests: int
    monthly_cost: Decimal
    monthly_saving: Decimal


def bucket_keys(end: date, *, window_days: int = BUCKET_WINDOW_DAYS) -> list[BucketSaving]:
    """Buckets whose SSE-KMS requests name objects (no Bucket Key), by requests over the window.

    A bucket names objects when any request of the window did (BucketDay.object_calls).
    """
    ranked = (
        BucketDay.objects.filter(day__gte=end - timedelta(days=window_days - 1), day__lte=end)
        .values("s3_bucket")
        .annotate(n=Sum("count"), named_objects=Sum("object_calls"))
        .order_by("-n", "s3_bucket")[:BUCKET_LIMIT]
    )
    unit = prices()["symmetric"]
    results = []
    for row in ranked:
        requests, names_objects = int(row["n"]), row["named_objects"] > 0
        monthly = Decimal(requests) * DAYS_PER_MONTH / window_days
        saving = (monthly * unit * BUCKET_KEY_SAVING).quantize(Decimal("0.01")) if names_objects else Decimal(0)
        cost = (monthly * unit).quantize(Decimal("0.01"))
        results.append(BucketSaving(row["s3_bucket"], requests, names_objects, int(monthly), cost, saving))
    return sorted(results, key=lambda b: (-b.monthly_saving, -b.requests, b.bucket))


@dataclass
class CachingSaving:
    principal: str
    daily_average: int
    active_days: int
    monthly_requests: int
    monthly_saving: Decimal


def data_key_caching(
    end: date, *, facts: dict[str, KeyFacts] | None = None, window_days: int = CACHING_WINDOW_DAYS
) -> list[CachingSaving]:
    """Principals calling GenerateDataKey/Decrypt at high, steady rates, with what a cache saves.

    Calls made by an AWS service on a principal's behalf (service set) cannot be cached by the
    principal and are left out.
    """
    facts = load_key_facts() if facts is None else facts
    start = end - timedelta(days=window_days - 1)
    rows = (
        DailyRollup.objects.filter(
            day__gte=start, day__lte=end, operation__in=CACHEABLE_OPERATIONS, service="", own=False
        )
        .values("principal", "day", "key", "operation")
        .annotate(n=Sum("count"))
    )
    table = prices()
    per_principal: dict[str, dict] = defaultdict(lambda: {"days": set(), "requests": 0, "cost": Decimal(0)})
    for row in rows:
        entry = per_principal[row["principal"]]
        entry["days"].add(row["day"])
        entry["requests"] += row["n"]
        spec = facts[row["key"]].key_spec if row["key"] in facts else ""
        entry["cost"] += table[request_price_name(spec, row["operation"])] * row["n"]
    hit_rate = Decimal(str(settings.KMSDASH_DATA_KEY_CACHE_HIT_RATE))
    results = []
    for principal, entry in per_principal.items():
        daily = Decimal(entry["requests"]) / window_days
        if not principal or daily < CACHING_MIN_DAILY or len(entry["days"]) < CACHING_STEADY_SHARE * window_days:
            continue
        monthly_cost = entry["cost"] / window_days * DAYS_PER_MONTH
        results.append(
            CachingSaving(
                principal,
                int(daily),
                len(entry["days"]),
                int(daily * DAYS_PER_MONTH),
                (monthly_cost * hit_rate).quantize(Decimal("0.01")),
            )
        )
    return sorted(results, key=lambda c: (-c.monthly_saving, c.principal))


@dataclass
class IdleKey:
    arn: str
    account_id: str
    region: str
    last_used: date | None
    monthly_saving: Decimal


def idle_keys(today: date, *, facts: dict[str, KeyFacts] | None = None) -> list[IdleKey]:
    """Customer managed keys with no use in KMSDASH_IDLE_KEY_DAYS days, each still billed monthly.

    The rollups decide; the inventory's GetKeyLastUsage date, when it has one, can only make a key
    less idle. Keys younger than the window are not idle yet.
    """
    facts = load_key_facts() if facts is None else facts
    days = settings.KMSDASH_IDLE_KEY_DAYS
    since = today - timedelta(days=days)
    candidates = {
        arn: f
        for arn, f in facts.items()
        if f.billed_monthly and not f.assumed and (f.creation_date is None or f.creation_date.date() <= since)
    }
    # kmsdash's own calls (its inventory describes every key) are no one's use of a key.
    rollups = DailyRollup.objects.filter(own=False, key__in=list(candidates))
    used = set(rollups.filter(day__gt=since).values_list("key", flat=True).distinct())
    last_seen = dict(rollups.values_list("key").annotate(last=Max("day")))
    table = prices()
    results = []
    for arn, f in candidates.items():
        if arn in used:
            continue
        if f.last_used_at is not None and f.last_used_at.date() > since:
            continue
        last = last_seen.get(arn)
        if f.last_used_at is not None and (last is None or f.last_used_at.date() > last):
            last = f.last_used_at.date()
        results.append(IdleKey(arn, f.account_id, f.region, last, f.monthly_charge(table)))
    return sorted(results, key=lambda k: (-k.monthly_saving, k.last_used or date.min, k.arn))
