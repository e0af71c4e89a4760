"""A Cost Explorer dataset consistent with synthetic KMS activity, for the demo and tests.

The demo seeder posts demo_dataset(...) to the emulator's /_kmsdash/ce/dataset, so the cost pages
show what AWS would bill for the events the demo ingested.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from kmsdash.dates import parse_day

from .prices import prices

TEN_PLACES = Decimal("1e-10")
DEFAULT_KEYS = 4  # audits.synthetic.generate_records' keys_per_account_region


def _day(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return parse_day(str(value)[:10])


def _amount(value: Decimal) -> str:
    return format(value.quantize(TEN_PLACES), "f")


def demo_dataset(start: date, end: date, activity: dict, *, today: date | None = None) -> list[dict[str, Any]]:
    """Rows for the days start .. end (both included).

    activity maps (day, account, region) to a request count, or to a dict with "requests"
    (symmetric), "asymmetric_requests" and "keys" (customer managed keys there; default 4).
    Every (account, region) in activity is billed its keys on every day; symmetric requests use
    up each account's monthly free tier first (shown as Global-KMS-Requests at no cost). Days of
    today's month are Estimated, as in Cost Explorer.
    """
    table = prices()
    today = today or datetime.now(UTC).date()
    usage: dict[tuple[date, str, str], dict[str, int]] = {}
    keys: dict[tuple[str, str], int] = {}
    for (day, account, region), value in activity.items():
        spec = value if isinstance(value, dict) else {"requests": value}
        entry = usage.setdefault((_day(day), str(account), str(region)), {"requests": 0, "asymmetric": 0})
        entry["requests"] += int(spec.get("requests", 0))
        entry["asymmetric"] += int(spec.get("asymmetric_requests", 0))
        keys[(str(account), str(region))] = max(
            keys.get((str(account), str(region)), 0), int(spec.get("keys", DEFAULT_KEYS))
        )

    rows: list[dict[str, Any]] = []
    free_left: dict[tuple[str, date], Decimal] = defaultdict(lambda: table["free_requests_per_month"])
    day = start
    while day <= end:
        estimated = (day.year, day.month) == (today.year, today.month)
        days_in_month = calendar.monthrange(day.year, day.month)[1]
        free_used: dict[str, Decimal] = defaultdict(Decimal)
        for (account, region), count in sorted(keys.items()):
            key_months = Decimal(count) / days_in_month
            rows.append(
                _row(day, account, f"{region}-KMS-Keys", key_months * table["key_month"], key_months, estimated)
            )
            day_usage = usage.get((day, account, region))
            if not day_usage:
                continue
            if day_usage["requests"]:
                requests = Decimal(day_usage["requests"])
                free = min(free_left[(account, day.replace(day=1))], requests)
                free_left[(account, day.replace(day=1))] -= free
                free_used[account] += free
                rows.append(
                    _row(
                        day,
                        account,
                        f"{region}-KMS-Requests",
                        (requests - free) * table["symmetric"],
                        requests,
                        estimated,
                    )
                )
            if day_usage["asymmetric"]:
                requests = Decimal(day_usage["asymmetric"])
                rows.append(
                    _row(
                        day,
                        account,
                        f"{region}-KMS-Requests-Asymmetric",
                        requests * table["asymmetric"],
                        requests,
                        estimated,
                    )
                )
        for account, free in sorted(free_used.items()):
            if free:
                rows.append(_row(day, account, "Global-KMS-Requests", Decimal(0), free, estimated))
        day += timedelta(days=1)
    return rows


def _row(day: date, account: str, usage_type: str, cost: Decimal, usage: Decimal, estimated: bool) -> dict[str, Any]:
    return {
        "date": day.isoformat(),
        "account": account,
        "usage_type": usage_type,
        "cost": _amount(cost),
        "usage": _amount(usage),
        "estimated": estimated,
    }
