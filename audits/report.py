"""The KMS usage report (kms_report command, and pages that show the same figures), from rollups only.

Counts, principals and services come from the per-key summaries (KeyDay, KeyPrincipalDay,
KeyServiceDay), whose dimensions are exactly the report's filters; operations from DailyRollup.

Rollups are daily, so the range is whole UTC days: `since` and `until` are inclusive dates, and a
date-time given for either is truncated to its UTC day.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

from django.db.models import Count, Q, Sum

from kmsdash.dates import parse_day, parse_utc

from .models import DailyRollup, KeyDay, KeyPrincipalDay, KeyServiceDay

CSV_HEADER = ("key", "events", "failed", "after_hours", "operations", "principals", "services")


def as_utc_day(value: date | datetime | str | None) -> date | None:
    """A date, a date-time (aware, or naive meaning UTC) or their ISO text -> the UTC day."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = parse_utc(text) if "T" in text or " " in text else parse_day(text)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an ISO date or date-time") from exc
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.date()
    return value


def report_rollups(*, since=None, until=None, account_id=None, region=None, key=None, model=DailyRollup):
    """Rows of DailyRollup (or of one of its summaries: `model`) in the report's scope."""
    qs = model.objects.all()
    since, until = as_utc_day(since), as_utc_day(until)
    if since:
        qs = qs.filter(day__gte=since)
    if until:
        qs = qs.filter(day__lte=until)
    if account_id:
        qs = qs.filter(account_id=account_id)
    if region:
        qs = qs.filter(region=region)
    if key:
        qs = qs.filter(key=key)
    return qs


def kms_report(*, since, until, account_id=None, region=None, key=None) -> dict[str, Any]:
    since_day, until_day = as_utc_day(since), as_utc_day(until)
    scope = {"since": since_day, "until": until_day, "account_id": account_id, "region": region, "key": key}
    key_days = report_rollups(**scope, model=KeyDay)
    totals = key_days.aggregate(
        events=Sum("calls", default=0),
        failed=Sum("failed", default=0),
        after_hours=Sum("after_hours_calls", default=0),
        keys=Count("key", filter=Q(key__gt=""), distinct=True),
    )
    per_key: dict[str, dict[str, Any]] = {}
    for row in (
        key_days.filter(key__gt="")
        .values("key")
        .annotate(events=Sum("calls"), failed=Sum("failed"), after_hours=Sum("after_hours_calls"))
    ):
        per_key[row["key"]] = {
            "key": row["key"],
            "events": row["events"],
            "operations": {},
            "principals": [],
            "services": [],
            "failed": row["failed"],
            "after_hours": row["after_hours"],
        }
    keyed = report_rollups(**scope).filter(key__gt="")
    for row in keyed.values("key", "operation").annotate(n=Sum("count")).order_by("key", "operation"):
        per_key[row["key"]]["operations"][row["operation"]] = row["n"]
    for model, field, target in ((KeyPrincipalDay, "principal", "principals"), (KeyServiceDay, "service", "services")):
        names: dict[str, set[str]] = defaultdict(set)
        rows = report_rollups(**scope, model=model).filter(key__gt="").exclude(**{field: ""})
        for key_arn, name in rows.values_list("key", field).distinct():
            names[key_arn].add(name)
        for key_arn, values in names.items():
            per_key[key_arn][target] = sorted(values)
    return {
        "since": since_day.isoformat() if since_day else None,
        "until": until_day.isoformat() if until_day else None,
        "totals": totals,
        "keys": sorted(per_key.values(), key=lambda item: (-item["events"], item["key"])),
    }


def report_csv_rows(report: dict[str, Any]):
    for item in report["keys"]:
        yield (
            item["key"],
            item["events"],
            item["failed"],
            item["after_hours"],
            ";".join(f"{name}={count}" for name, count in item["operations"].items()),
            ";".join(item["principals"]),
            ";".join(item["services"]),
        )
