"""Reads of Cost Explorer figures for the pages, the export and cost_report.

Sums are made in Python over Decimal values: rows are few (days x accounts x usage types) and this
keeps every figure exact on SQLite too, where the database would sum in floating point.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from audits.models import Source
from inventory.selectors import alias_names

from .models import CostRecord, CostRun
from .prices import price

ZERO = Decimal(0)
CENTS = Decimal("0.01")


def money(value: Decimal) -> str:
    """A Decimal as plain text with at least two places and no trailing zeros beyond them."""
    value = value.normalize()
    exponent = value.as_tuple().exponent  # an int for a finite value
    if isinstance(exponent, int) and exponent > -2:
        value = value.quantize(CENTS)
    return format(value, "f")


def month_start(day: date) -> date:
    return day.replace(day=1)


def month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def days_between(start: date, end: date) -> Iterator[date]:
    """start .. end, both included."""
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


@dataclass
class DayCost:
    day: date
    total: Decimal = ZERO
    estimated: bool = False
    has_data: bool = False
    by_usage_type: dict[str, Decimal] = field(default_factory=dict)
    by_account: dict[str, Decimal] = field(default_factory=dict)
    by_class: dict[str, Decimal] = field(default_factory=dict)
    by_region: dict[str, Decimal] = field(default_factory=dict)

    def add(self, record: dict) -> None:
        amount = record["amount"]
        self.total += amount
        self.has_data = True
        self.estimated = self.estimated or record["estimated"]
        for name, key in (
            ("by_usage_type", "usage_type"),
            ("by_account", "account_id"),
            ("by_class", "usage_class"),
            ("by_region", "region"),
        ):
            bucket = getattr(self, name)
            bucket[record[key]] = bucket.get(record[key], ZERO) + amount


def daily_costs(start: date, end: date) -> list[DayCost]:
    """One DayCost per UTC day from start to end (both included), days without rows as zero."""
    days = {day: DayCost(day) for day in days_between(start, end)}
    fields = ("day", "amount", "estimated", "usage_type", "account_id", "usage_class", "region")
    for record in CostRecord.objects.between(start, end).values(*fields):
        days[record["day"]].add(record)
    return list(days.values())


def total_between(start: date, end: date) -> Decimal:
    return sum(CostRecord.objects.between(start, end).values_list("amount", flat=True), ZERO)


def daily_table(start: date, end: date) -> Iterator[tuple]:
    """The stored rows, one per (day, account, usage type), for the CSV export and cost_report."""
    columns = (
        "day",
        "account_id",
        "usage_type",
        "usage_class",
        "region",
        "amount",
        "unit",
        "usage_quantity",
        "usage_unit",
        "estimated",
    )
    yield from (
        CostRecord.objects.between(start, end)
        .order_by("day", "account_id", "usage_type")
        .values_list(*columns)
        .iterator(chunk_size=2000)
    )


DAILY_TABLE_HEADER = (
    "date",
    "account",
    "usage_type",
    "usage_class",
    "region",
    "cost",
    "currency",
    "usage_quantity",
    "usage_unit",
    "estimated",
)


@dataclass
class MonthSummary:
    today: date
    month_to_date: Decimal
    last_month_same_days: Decimal
    forecast: Decimal
    through: date  # the last day counted in month_to_date
    estimated_days: int

    @property
    def change(self) -> Decimal | None:
        if not self.last_month_same_days:
            return None
        return (self.month_to_date - self.last_month_same_days) / self.last_month_same_days * 100


def month_summary(today: date) -> MonthSummary:
    """Month to date against the same days of last month, and a forecast to the month's end.

    The forecast adds, for each day left, the average of the last seven complete days (today's
    figures are still filling in, so today counts as a day left).
    """
    first = month_start(today)
    mtd = total_between(first, today)
    previous_first = month_start(first - timedelta(days=1))
    previous_same_day = min(today.day, calendar.monthrange(previous_first.year, previous_first.month)[1])
    last_month = total_between(previous_first, previous_first.replace(day=previous_same_day))
    complete = total_between(first, today - timedelta(days=1)) if today > first else ZERO
    recent = daily_costs(today - timedelta(days=7), today - timedelta(days=1))
    average = sum((d.total for d in recent), ZERO) / len(recent)
    days_left = (month_end(today) - today).days + 1
    forecast = complete + average * days_left
    estimated_days = CostRecord.objects.between(first, today).filter(estimated=True).values("day").distinct().count()
    return MonthSummary(today, mtd, last_month, forecast.quantize(CENTS), today, estimated_days)


@dataclass
class ApiSpend:
    requests: int
    cost: Decimal
    runs: int
    last_run: CostRun | None


def api_spend(start: date, end: date) -> ApiSpend:
    """What reading Cost Explorer cost, for runs started on days start .. end (UTC, included)."""
    since = datetime.combine(start, time.min, tzinfo=UTC)
    until = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
    runs = CostRun.objects.started_between(since, until)
    requests = sum(runs.values_list("requests", flat=True))
    return ApiSpend(requests, requests * price("ce_request"), runs.count(), CostRun.objects.first())


def grouped_series(days: list[DayCost], by: str) -> dict[str, list[Decimal]]:
    """{group label: [amount per day]} for a stacked chart; by is class, account or region."""
    attribute = {"class": "by_class", "account": "by_account", "region": "by_region", "usage_type": "by_usage_type"}[by]
    series: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO] * len(days))
    for index, day in enumerate(days):
        for label, amount in getattr(day, attribute).items():
            series[label][index] += amount
    return dict(sorted(series.items(), key=lambda item: -sum(item[1])))


def account_names() -> dict[str, str]:
    return dict(Source.objects.exclude(name="").values_list("account_id", "name"))


def label_keys(keys: list) -> list[dict]:
    aliases = alias_names()
    return [{"cost": key, "alias": aliases.get(key.key, "")} for key in keys]


def label_drivers(drivers: list[tuple[str, int, Decimal]], *, aliases: dict[str, str] | None = None) -> list[dict]:
    aliases = aliases or {}
    return [
        {"label": label, "alias": aliases.get(label, ""), "requests": requests, "cost": cost}
        for label, requests, cost in drivers
    ]
