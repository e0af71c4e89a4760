"""One delivery attempt per channel type. These functions touch only the network (never the
database), so the delivery pass can run several channels at once in threads; each returns an
Outcome instead of raising, and each is bounded by the per-attempt timeout."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import apprise
import requests
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.core.mail import EmailMultiAlternatives, get_connection

from kmsdash import aws

from . import messages

ERROR_MAX = 2000


@dataclass(frozen=True)
class Job:
    """Everything one attempt needs, read from the database before it starts."""

    delivery: str  # the notification id, X-Kmsdash-Delivery
    type: str
    target: str
    secret: str
    payload: dict


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str = ""


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send_webhook(job: Job, timeout: float) -> Outcome:
    if not job.secret:
        return Outcome(False, error="no signing secret (its environment variable is unset or empty)")
    body = messages.webhook_body(job.delivery, job.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "kmsdash-alerts",
        "X-Kmsdash-Delivery": job.delivery,
        "X-Kmsdash-Event": job.payload["event"],
        "X-Kmsdash-Signature": sign(job.secret, body),
    }
    try:
        # No redirects: a receiver cannot bounce the signed alert somewhere else. The body is
        # not read: only the status decides.
        with requests.post(
            job.target, data=body, headers=headers, timeout=(timeout, timeout), allow_redirects=False, stream=True
        ) as response:
            status = response.status_code
    except requests.RequestException as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}")
    return Outcome(200 <= status < 300, status, "" if 200 <= status < 300 else f"HTTP {status}")


def send_email(job: Job, timeout: float) -> Outcome:
    recipients = [address.strip() for address in job.target.split(",") if address.strip()]
    message = EmailMultiAlternatives(
        subject=messages.subject(job.payload),
        body=messages.plain_text(job.payload),
        to=recipients,
        headers={"X-Kmsdash-Delivery": job.delivery},
    )
    message.attach_alternative(messages.html(job.payload), "text/html")
    try:
        sent = get_connection(timeout=timeout).send_messages([message])
    except Exception as exc:  # smtplib, socket and backend errors alike: recorded, retried
        return Outcome(False, error=f"{type(exc).__name__}: {exc}")
    return Outcome(bool(sent), error="" if sent else "the email backend sent nothing")


def send_sns(job: Job, timeout: float) -> Outcome:
    region = job.target.split(":")[3]
    config = aws.client_config(max_attempts=1).merge(Config(connect_timeout=timeout, read_timeout=timeout))
    try:
        # A session per attempt: boto3 sessions are not thread-safe, clients made from one are.
        client = aws.session_for().client("sns", region_name=region, config=config)
        response = client.publish(
            TopicArn=job.target,
            Subject=messages.sns_subject(job.payload),
            Message=messages.webhook_body(job.delivery, job.payload).decode(),
            MessageAttributes={"kmsdash_delivery": {"DataType": "String", "StringValue": job.delivery}},
        )
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return Outcome(False, status, f"{aws.error_code(exc)}: {exc.response.get('Error', {}).get('Message')}")
    except BotoCoreError as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}")
    return Outcome(True, response["ResponseMetadata"]["HTTPStatusCode"])


def _with_timeouts(url: str, timeout: float) -> str:
    # apprise's own connect and read timeouts (cto, rto), unless the URL sets them.
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.setdefault("cto", str(timeout))
    query.setdefault("rto", str(timeout))
    return urlunsplit(parts._replace(query=urlencode(query)))


def send_apprise(job: Job, timeout: float) -> Outcome:
    if not job.secret:
        return Outcome(False, error="no apprise URL (its environment variable is unset or empty)")
    notifier = apprise.Apprise()
    if not notifier.add(_with_timeouts(job.secret, timeout)):
        return Outcome(False, error="apprise does not recognise the channel's URL")
    title, body = messages.chat(job.payload)
    # apprise 2 keeps each call's warnings on its result (its global log would mix the channels
    # that run in parallel threads).
    with notifier.notify(title=title, body=body, body_format=apprise.NotifyFormat.TEXT) as result:
        ok = bool(result)
        error = "" if ok else ("; ".join(entry.message for entry in result.logs()) or "apprise reported a failure")
    # Its messages may quote the URL, which holds the service's token.
    return Outcome(bool(ok), error=error.replace(job.secret, "(apprise URL)"))


def send_file(job: Job, timeout: float) -> Outcome:
    """The demo's channel: one JSON line a notification, with what email and chat would say."""
    record = {
        "time": datetime.now(UTC).isoformat(),
        "delivery": job.delivery,
        "subject": messages.subject(job.payload),
        "text": messages.plain_text(job.payload),
        "body": json.loads(messages.webhook_body(job.delivery, job.payload)),
    }
    try:
        path = Path(job.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(record, ensure_ascii=True) + "\n")
    except OSError as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}")
    return Outcome(True)


SENDERS: dict[str, Callable[[Job, float], Outcome]] = {
    "webhook": send_webhook,
    "email": send_email,
    "sns": send_sns,
    "apprise": send_apprise,
    "file": send_file,
}


def send(job: Job, timeout: float) -> tuple[Outcome, int]:
    """(outcome, latency in ms). A sender that raises anyway becomes a failed outcome."""
    started = time.monotonic()
    try:
        outcome = SENDERS[job.type](job, timeout)
    except Exception as exc:
        outcome = Outcome(False, error=f"{type(exc).__name__}: {exc}")
    latency = int((time.monotonic() - started) * 1000)
    if len(outcome.error) > ERROR_MAX:
        outcome = Outcome(outcome.ok, outcome.status_code, outcome.error[:ERROR_MAX])
    return outcome, latency
