"""Writes: recording what an alert owes each channel, and configuring channels.

`notify_alert` is the boundary with the alerts app, called once its transaction has committed.
It only writes rows and queues a task: the network is touched by the delivery pass alone
(notify/delivery.py), so a channel that is down can never slow down alert evaluation.
"""

from __future__ import annotations

import logging
import math
import re
import secrets as token
from datetime import timedelta

import apprise
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import transaction
from django.utils import timezone

from kmsdash import totals
from kmsdash.envelope import seal

from .models import SEVERITIES, Channel, Notification
from .tasks import deliver_alerts

log = logging.getLogger(__name__)

SNS_TOPIC_RE = re.compile(r"arn:aws[a-z-]*:sns:[a-z]{2}(-[a-z]+)+-\d:\d{12}:[A-Za-z0-9_-]{1,256}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SECRET_TYPES = (Channel.Type.WEBHOOK, Channel.Type.APPRISE)


def notify_alert(alert: dict, *, event: str) -> None:
    """Record one Notification per enabled channel that routes `alert`, and queue their delivery.

    At most KMSDASH_ALERT_MAX_NOTIFICATIONS_PER_HOUR per alert and channel in any hour; the excess
    is recorded as suppressed (counted on the health page, never sent). A resolution always goes.
    """
    if event not in Notification.Event.values:
        raise ValueError(f"unknown alert event {event!r}")
    alert_id = int(alert["id"])
    # JSON has no NaN or infinity (PostgreSQL's jsonb refuses them): a figure that is not finite is null.
    alert = {
        name: None if isinstance(value, float) and not math.isfinite(value) else value for name, value in alert.items()
    }
    now = timezone.now()
    limit = settings.KMSDASH_ALERT_MAX_NOTIFICATIONS_PER_HOUR
    payload = {"event": event, "alert": alert}
    pending = suppressed = 0
    with transaction.atomic():
        for channel in Channel.objects.filter(enabled=True):
            if not channel.routes(alert):
                continue
            # Two evaluations at the very same moment could both pass the count: one message over
            # the limit at worst, which is not worth a lock.
            recent = Notification.objects.filter(
                alert_id=alert_id, channel=channel, created_at__gt=now - timedelta(hours=1)
            ).exclude(state=Notification.State.SUPPRESSED)
            over = event != Notification.Event.RESOLVED and recent.count() >= limit
            Notification.objects.create(
                channel=channel,
                alert_id=alert_id,
                event=event,
                payload=payload,
                created_at=now,
                state=Notification.State.SUPPRESSED if over else Notification.State.PENDING,
                next_attempt_at=None if over else now,
                finished_at=now if over else None,
            )
            if over:
                # Recorded as final at once: its count moves with the row (kmsdash/totals.py).
                totals.add(totals.NOTIFICATIONS, {"channel_type": channel.type, "state": "suppressed"}, 1)
            suppressed += over
            pending += not over
        if pending:
            transaction.on_commit(queue_delivery)
    if pending or suppressed:
        log.info(
            "alert notifications recorded",
            extra={"alert": alert_id, "event": event, "pending": pending, "suppressed": suppressed},
        )


def queue_delivery() -> None:
    """Ask a worker for a delivery pass now. Best effort: the pass that beat runs every minute
    finds the same rows, so a broker that is down delays a notification, never loses it."""
    try:
        deliver_alerts.apply_async(retry=False)
    except Exception:
        log.warning("could not queue an alert delivery pass; the next scheduled pass will send it", exc_info=True)


def _clean_kinds(kinds: list[str]) -> list[str]:
    return sorted({kind.strip() for kind in kinds if kind.strip()})


def _validate(type_: str, target: str, min_severity: str, secret_env: str) -> list[str]:
    errors = []
    if type_ == Channel.Type.WEBHOOK:
        try:
            URLValidator(schemes=["http", "https"])(target)
        except ValidationError:
            errors.append("The webhook URL must be an http or https URL.")
    elif type_ == Channel.Type.EMAIL:
        addresses = [address.strip() for address in target.split(",") if address.strip()]
        if not addresses:
            errors.append("Give at least one email address.")
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                errors.append(f"Not an email address: {address!r}.")
    elif type_ == Channel.Type.SNS:
        if not SNS_TOPIC_RE.fullmatch(target):
            errors.append("The SNS topic must be an ARN like arn:aws:sns:us-east-1:123456789012:alerts.")
    if min_severity and min_severity not in SEVERITIES:
        errors.append(f"The minimum severity must be one of {', '.join(SEVERITIES)}.")
    if secret_env and not ENV_NAME_RE.fullmatch(secret_env):
        errors.append("The secret's environment variable name must be letters, digits and underscores.")
    if secret_env and type_ not in SECRET_TYPES:
        errors.append("Only webhook and apprise channels have a secret.")
    return errors


def apprise_display(url: str) -> str:
    """The apprise URL with its tokens masked, for the admin; '' if apprise does not know it."""
    instance = apprise.Apprise.instantiate(url)
    return instance.url(privacy=True) if instance else ""


def seal_secret(channel: Channel, secret: str) -> None:
    """Envelope-encrypt `secret` onto the channel with KMSDASH_SECRETS_KMS_KEY (not saved here)."""
    if not settings.KMSDASH_SECRETS_KMS_KEY:
        raise ValidationError(
            "Set KMSDASH_SECRETS_KMS_KEY to store the secret encrypted, or name an environment variable "
            "holding it (--secret-env)."
        )
    sealed = seal(secret.encode(), key_id=settings.KMSDASH_SECRETS_KMS_KEY, context=channel.encryption_context())
    channel.secret_env = ""
    channel.sealed_key_id = sealed.key_id
    channel.sealed_data_key = sealed.encrypted_key
    channel.sealed_value = sealed.ciphertext


def _clear_sealed(channel: Channel) -> None:
    channel.sealed_key_id, channel.sealed_data_key, channel.sealed_value = "", b"", b""


def upsert_channel(
    *,
    name: str,
    type: str,
    target: str = "",
    kinds: list[str] | None = None,
    min_severity: str = "",
    secret_env: str = "",
    apprise_url: str = "",
    enabled: bool = True,
) -> tuple[Channel, str, str]:
    """Create or update channel `name` so it is exactly as described (idempotent).

    Returns (channel, "created" | "updated" | "unchanged", a newly generated webhook secret or '').
    A webhook without --secret-env gets a random signing secret, sealed, and keeps it on later
    runs; an apprise URL (it holds the service's token) is sealed unless it lives in secret_env.
    """
    name = name.strip()
    errors = [] if 0 < len(name) <= 100 else ["The channel name must be 1-100 characters."]
    if type == Channel.Type.APPRISE:
        if bool(apprise_url) == bool(secret_env):
            errors.append("Give the apprise URL, or --secret-env naming the variable that holds it (not both).")
        elif apprise_url and not apprise_display(apprise_url):
            errors.append("apprise does not recognise this URL.")
        target = apprise_display(apprise_url) if apprise_url else ""
    errors += _validate(type, target, min_severity, secret_env)
    if errors:
        raise ValidationError(errors)

    existing = Channel.objects.filter(name=name).first()
    channel = existing or Channel(name=name)
    before = _state(channel) if existing else None
    if existing and existing.type != type:
        _clear_sealed(channel)
    channel.type = type
    channel.target = target
    channel.kinds = _clean_kinds(kinds or [])
    channel.min_severity = min_severity
    channel.enabled = enabled
    generated = ""
    if secret_env or type not in SECRET_TYPES:
        channel.secret_env = secret_env
        _clear_sealed(channel)
    elif type == Channel.Type.APPRISE:
        if not (channel.is_sealed and channel.secret() == apprise_url):
            seal_secret(channel, apprise_url)
    elif not channel.is_sealed:
        generated = token.token_urlsafe(32)
        seal_secret(channel, generated)
    if before == _state(channel):
        return channel, "unchanged", ""
    channel.save()
    return channel, "updated" if existing else "created", generated


def _state(channel: Channel) -> tuple:
    return (
        channel.type,
        channel.target,
        list(channel.kinds),
        channel.min_severity,
        channel.enabled,
        channel.secret_env,
        channel.sealed_key_id,
        bytes(channel.sealed_data_key),
        bytes(channel.sealed_value),
    )
