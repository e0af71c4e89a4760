"""Reads for the alert pages and the `alerts` command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db.models import Count, QuerySet

from audits.filters import Bound, EventFilter
from audits.models import Event, KeyHour, KeyPrincipalErrorHour, KeyPrincipalHour

from .detections import baseline_days, robust_threshold
from .models import ACTIVE_STATES, Alert, Kind, State
from .rules import Rule, load

JSON_FIELDS = (
    "id",
    "kind",
    "severity",
    "state",
    "account",
    "region",
    "key",
    "principal",
    "error_code",
    "first_event",
    "last_event",
    "detected_at",
    "count",
    "observed",
    "baseline",
    "threshold",
    "summary",
)
SAMPLE = 20
MEDIAN_ONLY = Rule("", True, {"min_count": 0, "ratio": 0, "mad_factor": 0})  # robust_threshold's median alone


def alerts(
    *,
    state: str = "active",
    kind: str = "",
    severity: str = "",
    account: str = "",
    key: str = "",
    principal: str = "",
    detected_since: datetime | None = None,
) -> QuerySet[Alert]:
    """state: active (not resolved), all, or one State."""
    qs = Alert.objects.all()
    if state == "active":
        qs = qs.filter(state__in=ACTIVE_STATES)
    elif state in State.values:
        qs = qs.filter(state=state)
    if kind:
        qs = qs.filter(kind=kind)
    if severity:
        qs = qs.filter(severity=severity)
    if account:
        qs = qs.filter(account_id=account)
    if key:
        qs = qs.filter(key=key)
    if principal:
        qs = qs.filter(principal=principal)
    if detected_since:
        qs = qs.filter(detected_at__gte=detected_since)
    return qs


def counts_by_state() -> dict[str, int]:
    return dict(Alert.objects.values_list("state").annotate(n=Count("id")).order_by())


def event_filter(alert: Alert) -> EventFilter:
    """The explorer's filter for the alert's events."""
    f = EventFilter(key=alert.key, account=alert.account_id, region=alert.region)
    if alert.kind in (Kind.FAILURE_BURST, Kind.AFTER_HOURS_UNUSUAL, Kind.NEW_PRINCIPAL):
        f = f.replace(principal=alert.principal)
    if alert.kind == Kind.FAILURE_BURST:
        f = f.replace(error=alert.error_code)
    if alert.kind == Kind.AFTER_HOURS_UNUSUAL:
        f = f.replace(after_hours=True)
    if alert.kind == Kind.CRITICAL_EVENT:
        f = f.replace(operation=alert.subject)
    if alert.first_event and alert.last_event and alert.kind != Kind.FINDING:
        f = f.replace(
            since=Bound(alert.first_event.astimezone(UTC), False), until=Bound(alert.last_event.astimezone(UTC), False)
        )
    return f


def sample_events(alert: Alert) -> list[Event]:
    if not alert.key or alert.kind == Kind.FINDING:
        return []
    f = event_filter(alert)
    if f.errors:
        return []
    return list(f.events().order_by("event_time", "id")[:SAMPLE])


def hourly_series(alert: Alert) -> tuple[list[datetime], list[int], list[float], list[float | None]] | None:
    """(hours, calls, baseline median, threshold) around the alert's activity, from the hourly
    summaries of its scope; the baseline as the detection computes it (same hour of the day for
    volume-spike, every hour for failures)."""
    if not alert.key or not alert.first_event or alert.kind == Kind.FINDING:
        return None
    start = alert.first_event.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    end = (alert.last_event or alert.first_event).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = end + timedelta(hours=6)
    window = timedelta(days=baseline_days())
    scope = {"account_id": alert.account_id, "region": alert.region, "hour__gte": start - window, "hour__lte": end}
    series: dict[datetime, int]
    if alert.kind == Kind.FAILURE_BURST:
        series = dict(
            KeyPrincipalErrorHour.objects.filter(
                key=alert.key, principal=alert.principal, error_code=alert.error_code, **scope
            ).values_list("hour", "failed")
        )
    elif alert.kind in (Kind.AFTER_HOURS_UNUSUAL, Kind.NEW_PRINCIPAL):
        column = "after_hours_calls" if alert.kind == Kind.AFTER_HOURS_UNUSUAL else "calls"
        series = dict(
            KeyPrincipalHour.objects.filter(key=alert.key, principal=alert.principal, **scope).values_list(
                "hour", column
            )
        )
    else:
        rows = KeyHour.objects.filter(key=alert.key, **scope)
        if alert.kind == Kind.VOLUME_SPIKE:  # successful calls, as the detection counts them
            series = {hour: calls - failed for hour, calls, failed in rows.values_list("hour", "calls", "failed")}
        else:
            series = dict(rows.values_list("hour", "calls"))
    hours: list[datetime] = []
    at = start
    while at <= end and len(hours) < 24 * 40:
        hours.append(at)
        at += timedelta(hours=1)
    rule = load()[alert.kind]
    medians: list[float] = []
    thresholds: list[float | None] = []
    for hour in hours:
        if alert.kind == Kind.VOLUME_SPIKE:
            values = [series.get(hour - timedelta(days=d), 0) for d in range(1, baseline_days() + 1)]
        else:
            values = [series.get(hour - timedelta(hours=h), 0) for h in range(1, baseline_days() * 24 + 1)]
        if alert.kind in (Kind.VOLUME_SPIKE, Kind.FAILURE_BURST):
            median, threshold = robust_threshold(values, rule)
            thresholds.append(threshold)
        else:
            median = robust_threshold(values, MEDIAN_ONLY)[0]
            thresholds.append(None)
        medians.append(median)
    return hours, [series.get(hour, 0) for hour in hours], medians, thresholds
