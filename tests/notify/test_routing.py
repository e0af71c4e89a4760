"""notify_alert: which channels get an alert, the hourly limit per alert, and the queued pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from notify.models import Channel, Notification
from notify.services import notify_alert
from tests.notify.support import make_alert

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 1, 3, 5, tzinfo=UTC)


def channel(name: str, **fields) -> Channel:
    return Channel.objects.create(name=name, type="file", target=f"/tmp/{name}.log", **fields)


def received(name: str) -> list[tuple[int, str, str]]:
    return list(
        Notification.objects.filter(channel__name=name)
        .order_by("created_at", "state")
        .values_list("alert_id", "event", "state")
    )


def test_a_channel_with_neither_kinds_nor_severity_gets_every_alert_and_the_others_filter(published):
    channel("all")
    channel("critical-events", kinds=["critical-event"])
    channel("high-up", min_severity="high")
    channel("exposed-critical", kinds=["key-exposed"], min_severity="critical")
    channel("off", enabled=False)

    notify_alert(make_alert(id=1, kind="critical-event", severity="medium"), event="opened")
    notify_alert(make_alert(id=2, kind="failure-burst", severity="high"), event="opened")
    notify_alert(make_alert(id=3, kind="key-exposed", severity="high"), event="opened")
    notify_alert(make_alert(id=4, kind="key-exposed", severity="critical"), event="escalated")

    assert [a for a, _, _ in received("all")] == [1, 2, 3, 4]
    assert [a for a, _, _ in received("critical-events")] == [1]
    assert [a for a, _, _ in received("high-up")] == [2, 3, 4]
    assert received("exposed-critical") == [(4, "escalated", "pending")]
    assert received("off") == []


def test_the_payload_is_the_alert_as_given_with_its_event():
    channel("all")
    alert = make_alert(observed=12.5, baseline=2.0, threshold=8.0, error_code="AccessDeniedException")
    notify_alert(alert, event="opened")
    assert Notification.objects.get().payload == {"event": "opened", "alert": alert}


def test_a_figure_that_is_not_finite_is_stored_as_null():
    channel("all")
    notify_alert(make_alert(observed=float("inf"), baseline=float("nan"), threshold=3.5), event="opened")
    alert = Notification.objects.get().payload["alert"]
    assert (alert["observed"], alert["baseline"], alert["threshold"]) == (None, None, 3.5)


def test_an_unknown_event_is_refused():
    with pytest.raises(ValueError):
        notify_alert(make_alert(), event="deleted")


def test_recording_queues_one_delivery_pass_after_commit(published, django_capture_on_commit_callbacks):
    channel("a")
    channel("b")
    with django_capture_on_commit_callbacks(execute=True):
        notify_alert(make_alert(), event="opened")
    assert published == ["notify.tasks.deliver_alerts"]


def test_nothing_is_queued_when_no_channel_wants_the_alert(published, django_capture_on_commit_callbacks):
    channel("critical-only", min_severity="critical")
    with django_capture_on_commit_callbacks(execute=True):
        notify_alert(make_alert(severity="low"), event="opened")
    assert published == [] and not Notification.objects.exists()


def test_beyond_the_hourly_limit_per_alert_notifications_are_recorded_as_suppressed(settings):
    settings.KMSDASH_ALERT_MAX_NOTIFICATIONS_PER_HOUR = 4
    channel("all")
    with time_machine.travel(T0, tick=False) as clock:
        for _ in range(6):
            notify_alert(make_alert(id=7), event="escalated")
            clock.shift(timedelta(minutes=5))
        notify_alert(make_alert(id=8), event="opened")  # another alert has its own budget
        notify_alert(make_alert(id=7, state="resolved"), event="resolved")  # always goes out
        states = [(e, s) for a, e, s in received("all") if a == 7]
        assert states == [("escalated", "pending")] * 4 + [("escalated", "suppressed")] * 2 + [("resolved", "pending")]
        assert [(e, s) for a, e, s in received("all") if a == 8] == [("opened", "pending")]
        suppressed = Notification.objects.filter(state="suppressed")
        assert all(n.next_attempt_at is None and n.finished_at for n in suppressed)

        # The hour before 04:21 holds only the resolution: room again.
        clock.move_to(T0 + timedelta(minutes=76))
        notify_alert(make_alert(id=7), event="escalated")
        assert received("all")[-1] == (7, "escalated", "pending")


def test_the_limit_counts_per_channel():
    channel("a")
    channel("b", kinds=["critical-event"])
    for _ in range(5):
        notify_alert(make_alert(id=9), event="escalated")
    assert [s for _, _, s in received("a")].count("suppressed") == 1
    assert [s for _, _, s in received("b")].count("suppressed") == 1


def test_beat_runs_the_delivery_task_every_minute_and_each_tick_expires_before_the_next():
    from celery.schedules import crontab
    from django.conf import settings as django_settings

    from kmsdash.celery import app

    entry = django_settings.CELERY_BEAT_SCHEDULE["alert-deliveries"]
    assert entry["task"] == "notify.tasks.deliver_alerts" and entry["task"] in app.tasks
    assert entry["schedule"] == crontab(minute="*") and entry["options"]["expires"] < 60


def test_the_task_is_one_delivery_pass(tmp_path):
    from notify.tasks import deliver_alerts

    Channel.objects.create(name="log", type="file", target=str(tmp_path / "alerts.log"))
    notify_alert(make_alert(), event="opened")
    assert deliver_alerts() == 1
    assert deliver_alerts() == 0  # delivered once: nothing left
    assert received("log") == [(42, "opened", "delivered")]
