"""The delivery pass over real sockets: signed webhooks with retries, email through a local SMTP
server, apprise to a local receiver, backoff and giving up, and channels that never wait for
each other."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest
import time_machine
from django.core.management import call_command
from django.urls import reverse

from kmsdash.roles import ADMIN
from notify.delivery import deliver_pending, retry_delay
from notify.models import Channel, DeliveryAttempt, Notification
from notify.services import notify_alert
from tests.notify.support import HOSTILE, Receiver, hostile_alert, make_alert
from tests.support import make_user

pytestmark = pytest.mark.django_db

SECRET = "s3cret-signing-key"
T0 = datetime(2026, 12, 1, 3, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _quick(settings, monkeypatch):
    settings.KMSDASH_ALERT_DELIVERY_TIMEOUT = 2
    settings.KMSDASH_BASE_URL = "https://kmsdash.example.com"
    monkeypatch.setenv("HOOK_SECRET", SECRET)


def webhook(url: str, name: str = "hook", **fields) -> Channel:
    return Channel.objects.create(name=name, type="webhook", target=url, secret_env="HOOK_SECRET", **fields)


def verify(secret: str, body: bytes, header: str) -> bool:
    # What a receiver does (the README's snippet).
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def test_a_webhook_that_fails_three_times_gets_the_same_signed_notification_on_the_fourth(capsys):
    with Receiver(plan=[500, 503, 502]) as receiver:
        webhook(receiver.url + "/hook")
        notify_alert(make_alert(), event="opened")
        for _ in range(4):
            call_command("deliver_alerts", "--now")

    assert len(receiver.requests) == 4
    notification = Notification.objects.get()
    deliveries = {r["headers"]["X-Kmsdash-Delivery"] for r in receiver.requests}
    assert deliveries == {str(notification.id)}
    assert len({r["body"] for r in receiver.requests}) == 1  # the very same bytes on every retry
    for request in receiver.requests:
        assert verify(SECRET, request["body"], request["headers"]["X-Kmsdash-Signature"])
        assert request["headers"]["Content-Type"] == "application/json"
    assert not verify(
        "another-secret", receiver.requests[0]["body"], receiver.requests[0]["headers"]["X-Kmsdash-Signature"]
    )
    body = receiver.json()
    assert body["delivery"] == str(notification.id) and body["event"] == "opened"
    assert body["alert"] == make_alert()
    assert body["link"] == "https://kmsdash.example.com/alerts/42/"

    assert notification.state == "delivered" and notification.attempts == 4
    ledger = list(DeliveryAttempt.objects.order_by("number").values_list("number", "ok", "status_code"))
    assert ledger == [(1, False, 500), (2, False, 503), (3, False, 502), (4, True, 200)]
    assert all(a.latency_ms is not None and a.finished_at for a in DeliveryAttempt.objects.all())
    assert "1 due: 1 delivered" in capsys.readouterr().out

    call_command("deliver_alerts", "--now")  # delivered: never again
    assert len(receiver.requests) == 4


def test_without_now_a_retry_waits_for_its_backoff(settings):
    settings.KMSDASH_ALERT_RETRY_FIRST_SECONDS = 30
    with Receiver(plan=[500]) as receiver, time_machine.travel(T0, tick=False) as clock:
        webhook(receiver.url)
        notify_alert(make_alert(), event="opened")
        assert deliver_pending().retrying == 1
        retry_at = Notification.objects.get().next_attempt_at
        assert T0 + timedelta(seconds=15) <= retry_at <= T0 + timedelta(seconds=30)

        clock.move_to(retry_at - timedelta(seconds=1))
        assert deliver_pending().claimed == 0
        clock.move_to(retry_at)
        assert deliver_pending().delivered == 1
    assert len(receiver.requests) == 2


def test_the_backoff_doubles_with_jitter_up_to_its_cap(settings):
    settings.KMSDASH_ALERT_RETRY_FIRST_SECONDS = 30
    settings.KMSDASH_ALERT_RETRY_MAX_SECONDS = 3600
    rng = random.Random(7)
    for attempt in range(1, 12):
        full = min(3600, 30 * 2 ** (attempt - 1))
        delays = [retry_delay(attempt, rng).total_seconds() for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) <= full
        assert max(delays) - min(delays) > full / 4  # jittered, not one fixed instant
    assert retry_delay(40).total_seconds() <= 3600


def test_a_delivery_still_failing_after_24_hours_is_marked_failed_and_shown_on_the_health_page(client, settings):
    with Receiver(plan=[500] * 1000) as receiver, time_machine.travel(T0, tick=False) as clock:
        webhook(receiver.url, name="broken-hook")
        notify_alert(make_alert(), event="opened")
        notification = Notification.objects.get()
        times = []
        while Notification.objects.get().state == "pending":
            clock.move_to(Notification.objects.get().next_attempt_at)
            times.append(datetime.now(UTC))
            deliver_pending()
        notification.refresh_from_db()
    assert notification.state == "failed"
    assert times[-1] == T0 + timedelta(hours=24)  # the last attempt falls on the deadline itself
    assert notification.finished_at == T0 + timedelta(hours=24)
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] < 60 and max(gaps) <= 3600
    assert 25 <= notification.attempts == len(receiver.requests) <= 45
    assert notification.last_error == "HTTP 500"

    client.force_login(make_user("boss", ADMIN))
    with time_machine.travel(T0 + timedelta(hours=25), tick=False):
        page = client.get(reverse("health")).content.decode()
    section = page[page.index('id="alert-deliveries"') :]
    assert "broken-hook" in section and '<span class="tag bad">1</span>' in section and "HTTP 500" in section


def test_a_channel_that_is_down_costs_one_timeout_per_pass_and_never_delays_the_others(settings):
    settings.KMSDASH_ALERT_DELIVERY_TIMEOUT = 1
    with Receiver(plan=["stall"] * 10) as down, Receiver() as up:
        webhook(down.url, name="down")
        webhook(up.url, name="up")
        for alert_id in (1, 2, 3):
            notify_alert(make_alert(id=alert_id), event="opened")
        started = time.monotonic()
        result = deliver_pending()
        elapsed = time.monotonic() - started
        down.release.set()
    assert len(up.requests) == 3 and len(down.requests) == 1
    assert (result.delivered, result.retrying, result.released) == (3, 1, 2)
    assert elapsed < 4  # one 1-second timeout, not three in a row
    down_states = Notification.objects.filter(channel__name="down").values_list("attempts", "state")
    assert sorted(down_states) == [(0, "pending"), (0, "pending"), (1, "pending")]
    assert "ReadTimeout" in DeliveryAttempt.objects.get(channel__name="down").error


def test_a_webhook_whose_secret_variable_is_unset_is_retried_not_sent_unsigned(monkeypatch):
    monkeypatch.delenv("HOOK_SECRET")
    with Receiver() as receiver:
        webhook(receiver.url)
        notify_alert(make_alert(), event="opened")
        deliver_pending(ignore_backoff=True)
    assert receiver.requests == []
    assert "no signing secret" in Notification.objects.get().last_error


def test_hostile_text_in_every_field_stays_inert_json_in_the_webhook():
    alert = hostile_alert()
    with Receiver() as receiver:
        webhook(receiver.url)
        notify_alert(alert, event="opened")
        deliver_pending()
    body = receiver.requests[0]["body"]
    assert json.loads(body)["alert"] == alert  # every value arrives exactly, as JSON strings
    assert all(32 <= byte < 127 for byte in body)  # ASCII only, no raw line break or bidi control
    for raw in (b"<", b">", b"&"):
        assert raw not in body


@pytest.fixture
def smtp_server():
    """aiosmtpd on 127.0.0.1: (port, inbox of (message, recipients))."""
    import socket

    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(
                (message_from_bytes(envelope.original_content, policy=policy.default), envelope.rcpt_tos)
            )
            return "250 OK"

    with socket.socket() as probe:  # a free port (the controller cannot start on port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def test_email_goes_through_the_smtp_backend_as_text_and_escaped_html(settings, smtp_server):
    port, inbox = smtp_server
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    Channel.objects.create(name="mail", type="email", target="sec@example.com, oncall@example.com")
    alert = hostile_alert()
    notify_alert(alert, event="opened")
    assert deliver_pending().delivered == 1

    ((message, recipients),) = inbox.messages
    assert sorted(recipients) == ["oncall@example.com", "sec@example.com"]
    notification = Notification.objects.get()
    assert message["X-Kmsdash-Delivery"] == str(notification.id)
    assert "\n" not in message["Subject"] and "forged" not in message.keys()
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Summary: summary <img src=x onerror=alert(1)>" in text
    assert "https://kmsdash.example.com/alerts/42/" in text
    for name in ("kind", "principal", "error_code", "summary", "key", "region", "account"):
        assert f"{name} &lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img" not in html and "<!channel>" not in html and "&lt;!channel&gt;" in html
    assert "\u202e" not in html and "⟨U+202E⟩" in html  # bidi controls shown, not obeyed
    assert '<a href="https://kmsdash.example.com/alerts/42/">' in html


def test_an_smtp_server_that_is_down_is_a_retried_failure(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 1
    Channel.objects.create(name="mail", type="email", target="sec@example.com")
    notify_alert(make_alert(), event="opened")
    assert deliver_pending().retrying == 1
    assert "ConnectionRefusedError" in Notification.objects.get().last_error


def test_apprise_posts_to_a_local_receiver_with_all_chat_markup_neutralised(monkeypatch):
    with Receiver() as receiver:
        monkeypatch.setenv("CHAT_URL", receiver.url.replace("http://", "json://") + "/chat")
        Channel.objects.create(name="chat", type="apprise", secret_env="CHAT_URL")
        notify_alert(hostile_alert(), event="opened")
        assert deliver_pending().delivered == 1
    request = receiver.requests[0]
    assert request["path"].startswith("/chat")
    message = json.loads(request["body"])
    text = message["title"] + "\n" + message["message"]
    assert "Summary: summary" in text
    for markup in ("<", ">", "[docs](", "@here", "@everyone", "`", "https://evil", "\u202e", "\nSubject: forged"):
        assert markup not in text, markup
    assert "‹!channel›" in text and "‹img src=x onerror=alert(1)›" in text  # still readable
    assert "https://kmsdash.example.com/alerts/42/" in text  # the one real link


def test_an_apprise_service_that_answers_500_is_retried_with_its_error_and_without_its_url(monkeypatch):
    with Receiver(plan=[500]) as receiver:
        url = receiver.url.replace("http://", "json://") + "/token-abc123"
        monkeypatch.setenv("CHAT_URL", url)
        Channel.objects.create(name="chat", type="apprise", secret_env="CHAT_URL")
        notify_alert(make_alert(), event="opened")
        assert deliver_pending().retrying == 1
    error = Notification.objects.get().last_error
    assert "500" in error and "token-abc123" not in error


def test_the_file_channel_appends_what_it_would_send(tmp_path):
    log = tmp_path / "demo" / "alerts.log"
    Channel.objects.create(name="demo", type="file", target=str(log))
    notify_alert(hostile_alert(), event="opened")
    notify_alert(make_alert(id=43), event="resolved")
    assert deliver_pending().delivered == 2
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["body"]["alert"]["id"] for line in lines] == [42, 43]
    assert all("\n" not in line["subject"] for line in lines)
    assert HOSTILE not in log.read_text()  # one escaped JSON line each


def test_a_pass_past_its_time_budget_starts_nothing_more_and_leaves_the_rest_to_the_next(monkeypatch, tmp_path):
    from notify import delivery

    Channel.objects.create(name="log", type="file", target=str(tmp_path / "alerts.log"))
    for alert_id in (1, 2):
        notify_alert(make_alert(id=alert_id), event="opened")
    monkeypatch.setattr(delivery, "PASS_SECONDS", -1)
    result = deliver_pending()
    assert (result.claimed, result.released, result.delivered) == (2, 2, 0)
    assert not DeliveryAttempt.objects.exists()
    monkeypatch.setattr(delivery, "PASS_SECONDS", 50)
    assert deliver_pending().delivered == 2  # released at once, not held until a lease expires
