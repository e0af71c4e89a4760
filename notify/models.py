"""Alert delivery: channels (configuration), notifications (what is owed to whom) and the ledger.

The database is the delivery queue: a Notification is pending until an attempt succeeds or its
delivery window closes. Its id is the X-Kmsdash-Delivery value, the same on every retry, so a
receiver can drop duplicates (delivery is at least once).
"""

from __future__ import annotations

import os
import uuid

from django.db import models
from django.utils import timezone

# The alerts' severities, lowest first: one definition, the alerts app's.
from alerts.models import SEVERITY_RANK, Severity
from kmsdash.envelope import Sealed, unseal

SEVERITIES = tuple(Severity.values)


class Channel(models.Model):
    """Where alerts go. A secret (webhook HMAC key, apprise URL) is never stored in plain text:
    either `secret_env` names the environment variable holding it, or it is sealed with the KMS
    key KMSDASH_SECRETS_KMS_KEY (kmsdash/envelope.py) into the three `sealed_*` fields."""

    class Type(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"
        SNS = "sns"
        APPRISE = "apprise"
        FILE = "file", "file (demo: append to a log file)"

    name = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=10, choices=Type.choices)
    target = models.CharField(
        max_length=2048,
        blank=True,
        help_text="Webhook URL, comma-separated email addresses, SNS topic ARN or file path. For apprise, "
        "the URL with its tokens masked (the URL itself is the secret).",
    )
    kinds = models.JSONField(
        default=list, blank=True, help_text='Alert kinds to send, e.g. ["critical-event"]; empty: all.'
    )
    min_severity = models.CharField(max_length=10, choices=Severity.choices, blank=True, help_text="Empty: all.")
    enabled = models.BooleanField(default=True)
    secret_env = models.CharField(max_length=200, blank=True, help_text="Environment variable holding the secret.")
    sealed_key_id = models.CharField(max_length=2048, blank=True, editable=False)
    sealed_data_key = models.BinaryField(blank=True, default=b"", editable=False)
    sealed_value = models.BinaryField(blank=True, default=b"", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def routes(self, alert: dict) -> bool:
        """Whether this channel gets `alert`: its kinds (if any) and minimum severity (if any)."""
        if self.kinds and alert.get("kind") not in self.kinds:
            return False
        if self.min_severity:
            return SEVERITY_RANK.get(str(alert.get("severity")), -1) >= SEVERITY_RANK[self.min_severity]
        return True

    @property
    def is_sealed(self) -> bool:
        return bool(self.sealed_data_key)

    def encryption_context(self) -> dict[str, str]:
        return {"kmsdash:purpose": "alert-channel-secret", "kmsdash:channel": self.name}

    def secret(self) -> str:
        """The plaintext secret, from the environment or unsealed through KMS; '' when none."""
        if self.secret_env:
            return os.environ.get(self.secret_env, "")
        if self.is_sealed:
            sealed = Sealed(self.sealed_key_id, bytes(self.sealed_data_key), bytes(self.sealed_value))
            return unseal(sealed, context=self.encryption_context()).decode()
        return ""

    def secret_source(self) -> str:
        if self.secret_env:
            return f"environment variable {self.secret_env}"
        if self.is_sealed:
            return f"encrypted with {self.sealed_key_id}"
        return "none"


class Notification(models.Model):
    class Event(models.TextChoices):
        OPENED = "opened"
        ESCALATED = "escalated"
        RESOLVED = "resolved"

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"  # the delivery window closed without a successful attempt
        SUPPRESSED = "suppressed"  # over the per-alert hourly limit: recorded, never sent

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="notifications")
    alert_id = models.BigIntegerField()
    event = models.CharField(max_length=10, choices=Event.choices)
    payload = models.JSONField(help_text="The alert as `alerts --format json` shows it, with its url.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Held by the worker sending it; a worker that dies leaves it to expire.
    leased_until = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="notify_due"),
            models.Index(fields=["alert_id", "channel", "created_at"], name="notify_alert_hour"),
        ]

    def __str__(self) -> str:
        return f"alert {self.alert_id} {self.event} -> {self.channel_id} ({self.state})"


class DeliveryAttempt(models.Model):
    """The ledger: one row per attempt, written before it starts (an attempt whose worker died has
    no outcome) and completed with its status code or error and latency."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="delivery_attempts")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="delivery_attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField(null=True)
    status_code = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [models.UniqueConstraint(fields=["notification", "number"], name="notify_attempt_once")]

    def __str__(self) -> str:
        return f"{self.notification_id} #{self.number}"
