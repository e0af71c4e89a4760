"""The one write path for cost data: the Celery task, the command and the demo all call it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from kmsdash.dates import parse_day
from kmsdash.locks import run_lock

from .explorer import Tally, fetch_kms_costs
from .models import CostRecord, CostRun
from .prices import classify_usage_type

log = logging.getLogger(__name__)

TEN_PLACES = Decimal("1e-10")
LOCK_NAME = "costs:cost-explorer"


def utc_today(now: datetime | None = None) -> date:
    """Cost Explorer days are UTC dates, whatever KMSDASH_TIME_ZONE says."""
    return (now or timezone.now()).astimezone(UTC).date()


def trailing_window(today: date) -> tuple[date, date]:
    """[first day of the previous month, tomorrow): amounts keep changing while Estimated is true,
    and the previous month is only final some days into this one. End is exclusive."""
    first_of_month = today.replace(day=1)
    previous = (first_of_month - timedelta(days=1)).replace(day=1)
    return previous, today + timedelta(days=1)


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value or "0")).quantize(TEN_PLACES)


def records_from_results(
    results: Iterable[dict[str, Any]], group_keys: list[str], metric: str, fetched_at: datetime
) -> Iterator[CostRecord]:
    usage_at = group_keys.index("USAGE_TYPE")
    account_at = group_keys.index("LINKED_ACCOUNT")
    for result in results:
        day = parse_day(result["TimePeriod"]["Start"][:10])
        estimated = bool(result.get("Estimated", False))
        for group in result.get("Groups", []):
            keys = group["Keys"]
            usage_type = keys[usage_at]
            cost = group["Metrics"].get(metric, {})
            usage = group["Metrics"].get("UsageQuantity", {})
            kind = classify_usage_type(usage_type)
            yield CostRecord(
                day=day,
                account_id=keys[account_at][:12],
                usage_type=usage_type[:256],
                usage_class=kind.usage_class,
                region=kind.region,
                metric=metric,
                amount=_decimal(cost.get("Amount")),
                unit=str(cost.get("Unit", "USD"))[:16],
                usage_quantity=_decimal(usage.get("Amount")),
                usage_unit=str(usage.get("Unit", ""))[:32],
                estimated=estimated,
                fetched_at=fetched_at,
            )


def ingest_costs(*, since: date | None = None, until: date | None = None, via: str = "task", client=None) -> CostRun:
    """Re-read [since, until] (default: the trailing window) and replace what is held for it.

    Nothing is written unless every page arrived: the window's rows are deleted and the new ones
    inserted in one transaction. The run row records every request, successful or not.
    """
    today = utc_today()
    start, end = trailing_window(today)
    if since is not None:
        start = since
    if until is not None:
        end = until + timedelta(days=1)
    # Cost Explorer refuses a Start after today; End may be tomorrow to include today.
    end = min(end, today + timedelta(days=1))
    if start >= end:
        raise ValueError(f"empty window: {start} .. {end} (End exclusive)")
    metric = settings.KMSDASH_COST_METRIC
    run = CostRun.objects.create(window_start=start, window_end=end, metric=metric, via=via)
    tally = Tally()
    try:
        with run_lock(LOCK_NAME) as acquired:
            if not acquired:
                # Another run is reading Cost Explorer right now; one is enough (and each page costs).
                _finish(run, tally, CostRun.Status.SKIPPED, error="another Cost Explorer run holds the lock")
                return run
            spent = requests_on(today)
            if spent >= settings.KMSDASH_CE_DAILY_REQUEST_BUDGET:
                log.warning("cost explorer budget reached", extra={"requests_today": spent})
                _finish(
                    run,
                    tally,
                    CostRun.Status.SKIPPED,
                    error=f"today's Cost Explorer request budget is spent ({spent} requests)",
                )
                return run
            fetched = fetch_kms_costs(start, end, metric, tally, client=client)
            records = list(records_from_results(fetched.results, fetched.group_keys, metric, timezone.now()))
            with transaction.atomic():
                CostRecord.objects.filter(day__gte=start, day__lt=end).delete()
                CostRecord.objects.bulk_create(records, batch_size=1000)
    except Exception as exc:
        _finish(run, tally, CostRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
        log.warning("cost explorer run failed", extra={"run": run.pk, "requests": tally.requests})
        raise
    _finish(run, tally, CostRun.Status.SUCCEEDED, rows=len(records))
    log.info("cost explorer run", extra={"run": run.pk, "rows": len(records), "requests": tally.requests})
    return run


def requests_on(day: date) -> int:
    since = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    runs = CostRun.objects.started_between(since, since + timedelta(days=1))
    return sum(runs.values_list("requests", flat=True))


def _finish(run: CostRun, tally: Tally, status: str, *, rows: int = 0, error: str = "") -> None:
    run.status = status
    run.requests = tally.requests
    run.pages = tally.pages
    run.restarts = tally.restarts
    run.rows = rows
    run.error = error
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "requests", "pages", "restarts", "rows", "error", "finished_at"])
