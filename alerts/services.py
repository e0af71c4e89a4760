"""Evaluation (detections -> alerts), the alerts' lifecycle, and what is handed to delivery.

`evaluate()` is the one entry point: the Celery task, `manage.py evaluate_alerts` and the demo call
it. It runs under its own run lock and reads what landed since the previous evaluation through the
alert candidates that every ingest batch writes with its events (audits/candidates.py), above an
id watermark settled under the ingest lock (audits.retention.settled_ids), in chunks. Each chunk's
alerts are committed with the watermark and the deletion of the chunk's candidates, so a crash
before the commit re-judges the chunk whole, one after it never sees the chunk again, and nothing
ingested before a crash of the evaluation (or while none ran) is missed: its candidates wait.

Delivery is notify's: `_notify` hands it the alert's JSON shape after the transaction commits, for
a new alert ("opened"), an escalation (severity up, or the count grown tenfold since the last
notification) and a resolution.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Field, Max, Q
from django.urls import reverse
from django.utils import timezone

import notify.services
from audits.models import AlertCandidate
from audits.retention import settled_ids
from inventory.models import Finding
from kmsdash.locks import run_lock

from . import rules as alert_rules
from .detections import Batch, Detection, finding_detections
from .models import ACTIVE_STATES, SEVERITY_RANK, Alert, AlertStateChange, Evaluation, Kind, State, Suppression

logger = logging.getLogger(__name__)

LOCK_NAME = "alerts:evaluate"
CHUNK_CANDIDATES = 50_000  # candidate ids judged per transaction (a few hundred per 10,000 events)


@dataclass
class EvaluationResult:
    status: str  # "done"; "skipped" (another evaluation holds the lock); "busy" (ingestion did not pause)
    events: int = 0
    opened: int = 0
    updated: int = 0
    suppressed: int = 0
    resolved: int = 0
    seconds: float = 0.0
    alerts: list[int] = field(default_factory=list)


# -- the JSON shape and delivery ---------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def as_json(alert: Alert) -> dict:
    """One element of `alerts --format json`; fields that do not apply are null."""
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "severity": alert.severity,
        "state": alert.state,
        "account": alert.account_id or None,
        "region": alert.region or None,
        "key": alert.key or None,
        "principal": alert.principal or None,
        "error_code": alert.error_code or None,
        "first_event": _time(alert.first_event),
        "last_event": _time(alert.last_event),
        "detected_at": _time(alert.detected_at),
        "count": alert.count,
        "observed": alert.observed,
        "baseline": alert.baseline,
        "threshold": alert.threshold,
        "summary": alert.summary,
    }


def _notify(alert_row: Alert, event: str) -> None:
    """Hand the alert to delivery once the current transaction commits (never inside it: a channel
    never delays evaluation, and a rolled-back alert is never sent)."""
    payload = {**as_json(alert_row), "url": reverse("alerts:detail", args=[alert_row.pk])}
    alert_row.last_notified_count = alert_row.count
    alert_row.last_notified_severity = alert_row.severity

    def send() -> None:
        try:
            notify.services.notify_alert(payload, event=event)
        except Exception:  # delivery's own failures are delivery's to record; evaluation goes on
            logger.exception("notify_alert failed", extra={"alert": payload["id"], "notification": event})

    transaction.on_commit(send)


def _escalated(alert: Alert) -> bool:
    if alert.state == State.SNOOZED:
        return False
    previous = SEVERITY_RANK.get(alert.last_notified_severity, 0)
    return SEVERITY_RANK[alert.severity] > previous or (
        alert.last_notified_count > 0 and alert.count >= 10 * alert.last_notified_count
    )


# -- state changes -------------------------------------------------------------------------------


def change_state(
    alert: Alert, to: str, *, user=None, comment: str = "", until: datetime | None = None, now: datetime | None = None
) -> Alert:
    """Move `alert` to `to`, recording who (None: kmsdash), when and why; notifies a resolution."""
    now = now or timezone.now()
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert.pk)
        if alert.state == State.RESOLVED and to != State.RESOLVED:
            raise ValueError("A resolved alert stays resolved; a new detection opens a new alert.")
        previous = alert.state
        alert.state = to
        alert.snoozed_until = until if to == State.SNOOZED else None
        fields = ["state", "snoozed_until"]
        AlertStateChange.objects.create(
            alert=alert, at=now, user=user, from_state=previous, to_state=to, comment=comment[:4000]
        )
        if to == State.RESOLVED and previous != State.RESOLVED:
            _notify(alert, "resolved")
            fields += ["last_notified_count", "last_notified_severity"]
        alert.save(update_fields=fields)
    return alert


# -- evaluation ------------------------------------------------------------------------------------


def evaluate(
    *, now: datetime | None = None, wait_seconds: float | None = None, chunk: int = CHUNK_CANDIDATES
) -> EvaluationResult:
    """Judge everything that landed since the previous evaluation; see the module docstring."""
    started = time.monotonic()
    with run_lock(LOCK_NAME) as acquired:
        if not acquired:
            return EvaluationResult("skipped")
        now = now or timezone.now()
        wait = settings.KMSDASH_ALERT_LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds
        state, _ = Evaluation.objects.get_or_create(pk=1)
        result = EvaluationResult("done")
        rules = alert_rules.load()
        suppressions = list(Suppression.objects.active(now))
        settled = settled_ids(wait_seconds=wait)
        if settled is None:
            result.status = "busy"
        else:
            last_event, high = settled
            low = state.candidate_id
            while low < high:
                upper = min(low + chunk, high)
                with transaction.atomic():
                    batch = Batch(low, upper, rules)
                    if batch.needs_active_scopes():
                        batch.active_scopes = _active_scopes()
                    result.events += batch.total
                    _apply(batch.detect(), suppressions, result, now)
                    marks = {"candidate_id": upper}
                    if upper == high:
                        marks["event_id"] = max(last_event, state.event_id)
                    Evaluation.objects.filter(pk=state.pk).update(**marks)
                    # Judged: consumed with the watermark's move, in the same transaction.
                    AlertCandidate.objects.filter(id__gt=low, id__lte=upper)._raw_delete(AlertCandidate.objects.db)
                low = upper
        with transaction.atomic():
            last_finding = Finding.objects.aggregate(last=Max("id"))["last"] or 0
            if last_finding > state.finding_id:
                _apply(
                    finding_detections(state.finding_id, last_finding, rules[Kind.FINDING]), suppressions, result, now
                )
                Evaluation.objects.filter(pk=state.pk).update(finding_id=last_finding)
        result.resolved = resolve_quiet(rules, now)
        result.seconds = time.monotonic() - started
        Evaluation.objects.filter(pk=state.pk).update(
            evaluated_at=now, last_events=result.events, last_seconds=result.seconds
        )
        logger.info("alerts evaluated", extra={k: v for k, v in vars(result).items() if k != "alerts"})
        return result


def _active_scopes() -> set[str]:
    return set(
        Alert.objects.filter(
            state__in=ACTIVE_STATES, kind__in=(Kind.AFTER_HOURS_UNUSUAL, Kind.NEW_PRINCIPAL)
        ).values_list("scope_hash", flat=True)
    )


def _suppressed_by(detection: Detection, suppressions: list[Suppression]) -> Suppression | None:
    for suppression in suppressions:
        if suppression.matches(
            detection.kind, account=detection.account, key=detection.key, principal=detection.principal
        ):
            return suppression
    return None


def _apply(
    detections: list[Detection], suppressions: list[Suppression], result: EvaluationResult, now: datetime
) -> None:
    """Fold the detections into alerts: one active alert per (kind, scope)."""
    merged: dict[str, Detection] = {}
    for detection in detections:
        scope = detection.scope
        if scope in merged:
            merged[scope].merge(detection)
        else:
            merged[scope] = detection
    if not merged:
        return
    active = {
        alert.scope_hash: alert
        for alert in Alert.objects.select_for_update().filter(scope_hash__in=list(merged), state__in=ACTIVE_STATES)
    }
    opened: list[Alert] = []
    grown: list[Alert] = []
    for scope, detection in merged.items():
        suppression = _suppressed_by(detection, suppressions)
        if suppression is not None:
            suppression.record(detection.count or sum((detection.hours or {}).values()), now)
            result.suppressed += 1
            continue
        alert = active.get(scope)
        if alert is None:
            opened.append(_new(scope, detection, now))
        else:
            _grow(alert, detection, now)
            grown.append(alert)
            result.updated += 1
            result.alerts.append(alert.pk)
    if grown:
        _write_grown(grown)
    if opened:
        # Written together: a backfill can open hundreds at once.
        Alert.objects.bulk_create(opened)
        AlertStateChange.objects.bulk_create(
            [
                AlertStateChange(
                    alert=alert, at=now, from_state="", to_state=State.OPEN, comment=f"Detected: {alert.summary}"[:4000]
                )
                for alert in opened
            ]
        )
        for alert in opened:
            _notify(alert, "opened")  # the notified figures were written with the row
            result.opened += 1
            result.alerts.append(alert.pk)


def _new(scope: str, d: Detection, now: datetime) -> Alert:
    evidence = dict(d.evidence)
    if d.hours:
        evidence["hours"] = dict(d.hours)
    count = sum(d.hours.values()) if d.hours else d.count
    return Alert(
        kind=d.kind,
        severity=d.severity,
        state=State.OPEN,
        scope_hash=scope,
        account_id=d.account,
        region=d.region,
        key=d.key,
        principal=d.principal,
        error_code=d.error_code,
        subject=d.subject[:256],
        first_event=d.first_event,
        last_event=d.last_event,
        detected_at=now,
        updated=now,
        count=count,
        observed=d.observed,
        baseline=d.baseline,
        threshold=d.threshold,
        summary=d.summary[:1024],
        evidence=evidence,
        finding_id=d.finding_id,
        last_notified_count=count,
        last_notified_severity=d.severity,
    )


def _grow(alert: Alert, d: Detection, now: datetime) -> None:
    """Add the detection to the active alert in memory; _apply writes it (GROWN_FIELDS)."""
    evidence = dict(alert.evidence or {})
    if d.hours:
        hours = {**evidence.get("hours", {}), **d.hours}
        evidence["hours"] = hours
        alert.count = sum(hours.values())
    else:
        alert.count += d.count
    if d.evidence.get("events"):
        evidence["events"] = (evidence.get("events", []) + d.evidence["events"])[-SAMPLE_KEEP:]
    alert.evidence = evidence
    if d.first_event and (alert.first_event is None or d.first_event < alert.first_event):
        alert.first_event = d.first_event
    if d.last_event and (alert.last_event is None or d.last_event > alert.last_event):
        alert.last_event = d.last_event
    if d.observed is not None and (alert.observed is None or d.observed > alert.observed):
        alert.observed, alert.baseline, alert.threshold = d.observed, d.baseline, d.threshold
        alert.summary = d.summary[:1024]
    if SEVERITY_RANK[d.severity] > SEVERITY_RANK[alert.severity]:
        alert.severity = d.severity
    alert.updated = now
    if alert.state == State.SNOOZED and alert.snoozed_until and alert.snoozed_until <= now:
        _wake(alert, now)
    if _escalated(alert):
        _notify(alert, "escalated")


# What _grow (and _wake, _notify within it) may change; _apply writes them.
GROWN_FIELDS = (
    "count",
    "evidence",
    "first_event",
    "last_event",
    "observed",
    "baseline",
    "threshold",
    "summary",
    "severity",
    "updated",
    "state",
    "snoozed_until",
    "last_notified_count",
    "last_notified_severity",
)


SAMPLE_KEEP = 20


def _write_grown(alerts: list[Alert]) -> None:
    """Save what _grow changed: on PostgreSQL in one UPDATE ... FROM (VALUES ...), since a round of
    ingestion grows dozens of open alerts (a save each costs a round trip, and Django's bulk_update
    spends most of a second building its CASE expressions for 50 of them)."""
    if connection.vendor != "postgresql":
        for alert in alerts:
            alert.save(update_fields=GROWN_FIELDS)
        return
    fields: list[Field] = [Alert._meta.get_field(name) for name in ("id", *GROWN_FIELDS)]  # type: ignore[misc]
    row = "(" + ", ".join(f"CAST(%s AS {field.db_type(connection)})" for field in fields) + ")"
    params = [field.get_db_prep_save(getattr(alert, field.attname), connection) for alert in alerts for field in fields]
    columns = [str(field.column) for field in fields]
    assignments = ", ".join(f"{column} = v.{column}" for column in columns[1:])
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Alert._meta.db_table} AS a SET {assignments} "
            f"FROM (VALUES {', '.join([row] * len(alerts))}) AS v({', '.join(columns)}) WHERE a.id = v.id",
            params,
        )


def _wake(alert: Alert, now: datetime) -> None:
    AlertStateChange.objects.create(
        alert=alert, at=now, from_state=State.SNOOZED, to_state=State.OPEN, comment="Snooze ended."
    )
    alert.state = State.OPEN
    alert.snoozed_until = None


def resolve_quiet(rules: dict[str, alert_rules.Rule], now: datetime) -> int:
    """Resolve the alerts whose condition has not recurred for their rule's quiet time, and those of
    findings that no longer hold; end the snoozes that are over. Returns how many resolved."""
    quiet = Q()
    for kind, rule in rules.items():
        if kind == Kind.FINDING:
            quiet |= Q(kind=kind) & (
                Q(finding__isnull=True) | Q(finding__resolved_at__isnull=False) | Q(finding__accepted_at__isnull=False)
            )
        else:
            quiet |= Q(kind=kind, updated__lte=now - timedelta(hours=rule.resolve_after_hours))
    resolved = 0
    with transaction.atomic():
        for alert in Alert.objects.select_for_update().filter(state=State.SNOOZED, snoozed_until__lte=now):
            _wake(alert, now)
            alert.save(update_fields=["state", "snoozed_until"])
        for alert in Alert.objects.select_for_update(of=("self",)).filter(quiet, state__in=ACTIVE_STATES):
            if alert.kind == Kind.FINDING:
                comment = "Resolved automatically: the finding no longer holds (resolved or accepted)."
            else:
                comment = (
                    "Resolved automatically: the condition has not recurred for "
                    f"{rules[alert.kind].resolve_after_hours:g} hours."
                )
            previous = alert.state
            alert.state = State.RESOLVED
            alert.snoozed_until = None
            AlertStateChange.objects.create(
                alert=alert, at=now, from_state=previous, to_state=State.RESOLVED, comment=comment
            )
            _notify(alert, "resolved")
            alert.save(update_fields=["state", "snoozed_until", "last_notified_count", "last_notified_severity"])
            resolved += 1
    return resolved
