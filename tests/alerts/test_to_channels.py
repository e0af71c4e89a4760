"""Detection and delivery joined: an event that lands is alerted, and the alert reaches a signed
webhook with the same JSON shape `alerts --format json` prints, through the real commands."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command

from notify.models import Channel
from tests.alerts.support import K1, T, ingest, rec
from tests.notify.support import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "joined-secret"


def test_a_key_deletion_that_lands_reaches_a_signed_webhook_as_the_alerts_command_shows_it(monkeypatch, settings):
    monkeypatch.setenv("JOINED_SECRET", SECRET)
    settings.KMSDASH_ALERT_DELIVERY_TIMEOUT = 2
    # The evaluation and delivery tasks queued on commit go to an in-memory broker; the commands
    # below run the same code synchronously.
    settings.CELERY_BROKER_URL = "memory://"
    with Receiver() as receiver:
        call_command(
            "add_alert_channel",
            "security-hook",
            "--webhook",
            receiver.url + "/in",
            "--min-severity",
            "high",
            "--secret-env",
            "JOINED_SECRET",
            stdout=io.StringIO(),
        )
        Channel.objects.create(
            name="low-only",
            type="webhook",
            target=receiver.url + "/low",
            secret_env="JOINED_SECRET",
            kinds=["volume-spike"],
        )
        ingest(
            [
                rec(
                    "ScheduleKeyDeletion",
                    when=T + timedelta(minutes=3),
                    request_parameters={"keyId": K1, "pendingWindowInDays": 7},
                )
            ]
        )
        call_command("evaluate_alerts", stdout=io.StringIO())
        call_command("deliver_alerts", "--now", stdout=io.StringIO())

        out = io.StringIO()
        call_command("alerts", "--format", "json", stdout=out)
        (listed,) = json.loads(out.getvalue())["alerts"]

    assert [r["path"] for r in receiver.requests] == ["/in"]  # the other channel takes volume spikes only
    request = receiver.requests[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["X-Kmsdash-Signature"], expected)
    body = json.loads(request["body"])
    assert body["event"] == "opened"
    sent = body["alert"]
    assert sent["url"] == f"/alerts/{listed['id']}/"
    assert {k: v for k, v in sent.items() if k != "url"} == listed
    assert (sent["kind"], sent["key"], sent["first_event"]) == (
        "critical-event",
        K1,
        (T + timedelta(minutes=3)).isoformat(),
    )
