"""Evaluation as a whole: imports at once, late files, the watermark under concurrent batches,
suppressions, escalation, the lifecycle and the commands."""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection, connections, transaction

from alerts.models import Alert, AlertStateChange, Evaluation, Kind, State, Suppression
from alerts.services import change_state
from audits import synthetic
from audits.ingest import Ingestor, start_run
from tests.alerts.support import APP, FOREIGN, K1, K2, A, T, hourly, ingest, rec, role

pytestmark = pytest.mark.django_db


def thirty_days_with_look_alikes() -> list[dict]:
    batch = role("batch")
    return (
        hourly(days=30, per_hour=3, key=K1)
        + hourly(days=30, per_hour=30, key=K2)  # ten times busier
        + hourly(days=30, per_hour=40, hours=[2], identity=batch)  # nightly batch at 02:00
        + hourly(days=30, per_hour=1, hours=range(24), error="AccessDenied", identity=role("scanner"))
        + [
            rec("CreateGrant", identity=role("app", invoked_by="ec2.amazonaws.com"), when=T - timedelta(days=d))
            for d in range(30)
        ]
    )


def test_thirty_days_imported_at_once_alert_for_the_last_days_incident_only(notified):
    incident = [
        rec(
            "ScheduleKeyDeletion",
            key=K2,
            identity=synthetic.identity_role(FOREIGN, "thief", "t"),
            when=T + timedelta(minutes=5),
        )
    ]
    ingest(thirty_days_with_look_alikes() + incident)
    result = notified.evaluate()
    assert result.status == "done" and result.events > 10_000
    found = sorted((a.kind, a.key, a.principal) for a in Alert.objects.all())
    thief = f"arn:aws:iam::{FOREIGN}:role/thief"
    assert found == [(Kind.CRITICAL_EVENT, K2, thief), (Kind.NEW_PRINCIPAL, K2, thief)]


def test_a_log_file_delivered_two_hours_late_alerts_with_the_activity_time(notified):
    ingest(hourly(per_hour=2))
    notified.evaluate()
    assert Alert.objects.count() == 0
    activity = T - timedelta(hours=2)
    with time_machine.travel(T, tick=False):
        ingest([rec("DisableKey", when=activity)])
        notified.evaluate()
    alert = Alert.objects.get()
    assert (alert.first_event, alert.last_event, alert.detected_at) == (activity, activity, T)


def test_an_evaluation_judges_each_event_once(notified):
    ingest([rec("DisableKey")])
    notified.evaluate()
    notified.evaluate()
    assert Alert.objects.get().count == 1
    assert Evaluation.objects.get().event_id > 0


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_out_of_id_order_is_not_skipped(notified):
    """PostgreSQL: batch 1 takes the lower id and commits after batch 2; the evaluation between
    them must neither judge past batch 1's id nor lose it."""
    if connection.vendor != "postgresql":
        pytest.skip("ids are issued in commit order on SQLite")
    ingest(hourly(days=1, per_hour=1))
    started, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow_batch():
        try:
            # Another source kind than the batch below: the running totals of one kind are rows
            # every batch of it updates last (kmsdash/totals.py), so a batch held open after
            # them would make the other wait instead of committing first.
            ingestor = Ingestor(start_run("s3"))
            with transaction.atomic():
                ingestor.add(rec("ScheduleKeyDeletion", key=K1))
                ingestor.flush()  # inserted with its id, not committed
                started.set()
                release.wait(10)
        finally:
            connections.close_all()
            done.set()

    thread = threading.Thread(target=slow_batch)
    thread.start()
    assert started.wait(10)
    # A higher id, committed first (another principal: no summary row shared with batch 1 to wait on).
    ingest([rec("DisableKey", key=K2, identity=role("other"))])
    result = notified.evaluate(wait_seconds=0.2)
    assert result.status == "busy" and Alert.objects.count() == 0
    release.set()
    done.wait(10)
    thread.join()
    result = notified.evaluate()
    assert sorted(Alert.objects.values_list("subject", flat=True)) == ["DisableKey", "ScheduleKeyDeletion"]


def test_suppressed_detections_are_counted_not_alerted(notified):
    suppression = Suppression.objects.create(
        kind=Kind.CRITICAL_EVENT, key_pattern="*:key/1111*", reason="decommissioning"
    )
    Suppression.objects.create(kind=Kind.CRITICAL_EVENT, reason="expired", expires_at=T - timedelta(days=1))
    with time_machine.travel(T, tick=False):
        ingest(
            [
                rec("DisableKey", key=K1),
                rec("DisableKey", key=K1, when=T + timedelta(seconds=1)),
                rec("DisableKey", key=K2),
            ]
        )
        notified.evaluate()
    assert list(Alert.objects.values_list("key", flat=True)) == [K2]
    suppression.refresh_from_db()
    assert suppression.suppressed_count == 2 and suppression.last_suppressed_at == T


def test_a_count_grown_tenfold_escalates_and_a_resolution_notifies(notified):
    ingest([rec("DisableKey")])
    notified.evaluate()
    ingest([rec("DisableKey", when=T + timedelta(seconds=i)) for i in range(1, 10)])
    notified.evaluate()
    assert notified.events() == ["opened", "escalated"] and notified.calls[-1][1]["count"] == 10
    ingest([rec("DisableKey", when=T + timedelta(minutes=5))])
    notified.evaluate()
    assert notified.events() == ["opened", "escalated"]  # 11 is not ten times 10


def test_a_quiet_alert_resolves_itself_saying_so_and_a_new_detection_opens_a_new_one(notified):
    with time_machine.travel(T, tick=False):
        ingest([rec("DisableKey")])
        notified.evaluate()
    with time_machine.travel(T + timedelta(hours=25), tick=False):
        result = notified.evaluate()
    alert = Alert.objects.get()
    assert result.resolved == 1 and alert.state == State.RESOLVED
    change = alert.changes.last()
    assert change.user is None and "has not recurred for 24 hours" in change.comment
    assert notified.events() == ["opened", "resolved"]
    ingest([rec("DisableKey", when=T + timedelta(days=2))])
    notified.evaluate()
    assert Alert.objects.filter(state=State.OPEN).count() == 1 and Alert.objects.count() == 2


def test_acknowledged_and_snoozed_alerts_record_who_and_a_snooze_ends(notified, django_user_model):
    user = django_user_model.objects.create_user("ana")
    with time_machine.travel(T, tick=False):
        ingest([rec("DisableKey")])
        notified.evaluate()
        alert = Alert.objects.get()
        change_state(alert, State.ACKNOWLEDGED, user=user, comment="looking")
        change_state(alert, State.SNOOZED, user=user, until=T + timedelta(hours=2))
    with time_machine.travel(T + timedelta(hours=3), tick=False):
        notified.evaluate()
    history = list(AlertStateChange.objects.filter(alert=alert).values_list("user__username", "to_state", "comment"))
    assert history == [
        (None, "open", history[0][2]),
        ("ana", "acknowledged", "looking"),
        ("ana", "snoozed", ""),
        (None, "open", "Snooze ended."),
    ]


def test_the_alerts_command_prints_the_json_shape_and_neutralised_csv(notified):
    hostile = '=HYPERLINK("http://x")'
    ingest([rec("DisableKey", identity=synthetic.identity_user(A, hostile))])
    notified.evaluate()
    out = io.StringIO()
    call_command("alerts", "--format", "json", stdout=out)
    (row,) = json.loads(out.getvalue())["alerts"]
    assert list(row) == [
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
    ]
    assert row["error_code"] is None and row["first_event"] == T.isoformat()
    out = io.StringIO()
    call_command("alerts", "--format", "csv", "--state", "all", "--kind", "critical-event", stdout=out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0][0] == "id" and rows[1][7] == f"arn:aws:iam::{A}:user/{hostile}"
    out = io.StringIO()
    call_command("alerts", "--since", (T + timedelta(days=3650)).date().isoformat(), stdout=out)
    assert json.loads(out.getvalue()) == {"alerts": []}


def test_evaluate_alerts_command_runs_one_evaluation(notified):
    ingest([rec("DisableKey")])
    out = io.StringIO()
    call_command("evaluate_alerts", stdout=out)
    assert json.loads(out.getvalue())["status"] == "done"
    assert Alert.objects.count() == 1


def test_an_ingestion_task_that_added_events_queues_an_evaluation(monkeypatch):
    from alerts import tasks as alert_tasks
    from audits import tasks
    from audits.ingest import Counts
    from audits.services import ScopeResult

    queued = []
    monkeypatch.setattr(alert_tasks.evaluate_alerts, "delay", lambda: queued.append(1))
    tasks._evaluate_if_new(ScopeResult("s3", A, "us-east-1", "done", counts=Counts(events_new=0)))
    assert queued == []
    tasks._evaluate_if_new(ScopeResult("s3", A, "us-east-1", "done", counts=Counts(events_new=3)))
    assert queued == [1]


__all__ = ["APP"]
