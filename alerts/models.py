"""Alerts: what the detections found in KMS activity, their history, the rules and suppressions.

One open alert per (kind, scope): `scope_hash` names the scope, and a partial unique constraint
holds while the alert is not resolved, so a repeat of the same condition grows the open alert
(count, last_event) instead of opening another.
"""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatchcase

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Kind(models.TextChoices):
    CRITICAL_EVENT = "critical-event"
    KEY_EXPOSED = "key-exposed"
    FAILURE_BURST = "failure-burst"
    VOLUME_SPIKE = "volume-spike"
    AFTER_HOURS_UNUSUAL = "after-hours-unusual"
    NEW_PRINCIPAL = "new-principal"
    FINDING = "finding"
    QUOTA_HEADROOM = "quota-headroom"
    THROTTLING = "throttling"


class Severity(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


SEVERITY_RANK: dict[str, int] = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


class State(models.TextChoices):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


# Every state but resolved holds the scope: a new detection of it grows that alert.
ACTIVE_STATES = (State.OPEN, State.ACKNOWLEDGED, State.SNOOZED)


def scope_hash(kind: str, *parts: str) -> str:
    """The (kind, scope) an alert stands for, as a fixed-width key (parts are length-prefixed)."""
    text = "".join(f"{len(part)}:{part}" for part in (kind, *parts))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Alert(models.Model):
    kind = models.CharField(max_length=32, choices=Kind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    scope_hash = models.CharField(max_length=64)
    # The scope; '' where it does not apply (null in the JSON).
    account_id = models.CharField(max_length=12, blank=True)
    region = models.CharField(max_length=32, blank=True)
    key = models.CharField(max_length=2048, blank=True)
    principal = models.CharField(max_length=2048, blank=True)
    error_code = models.CharField(max_length=128, blank=True)
    # What else tells two scopes of one kind apart: the operation of a critical event, the
    # finding's fingerprint. Not part of the JSON shape; shown on the page.
    subject = models.CharField(max_length=256, blank=True)
    first_event = models.DateTimeField(null=True, blank=True)
    last_event = models.DateTimeField(null=True, blank=True)
    detected_at = models.DateTimeField()
    updated = models.DateTimeField(
        help_text="When a detection last added to this alert (the quiet time counts from it)."
    )
    count = models.BigIntegerField(default=0)
    observed = models.FloatField(null=True, blank=True)
    baseline = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    summary = models.CharField(max_length=1024)
    evidence = models.JSONField(default=dict)
    finding = models.ForeignKey(
        "inventory.Finding", null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    last_notified_count = models.BigIntegerField(default=0)
    last_notified_severity = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["-detected_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope_hash"], condition=~Q(state="resolved"), name="alert_one_active_per_scope"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "kind"], name="alert_state_kind"),
            models.Index(fields=["-detected_at"], name="alert_detected"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.severity} {self.state} #{self.pk}"

    @property
    def evidence_text(self) -> str:
        return json.dumps(self.evidence, indent=2, sort_keys=True, ensure_ascii=False)

    @property
    def active(self) -> bool:
        return self.state != State.RESOLVED


class AlertStateChange(models.Model):
    """One change of an alert's state: by whom (None: kmsdash itself), when, and why."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="changes")
    at = models.DateTimeField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    from_state = models.CharField(max_length=16, choices=State.choices, blank=True)
    to_state = models.CharField(max_length=16, choices=State.choices)
    comment = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"#{self.alert_id} {self.from_state or '-'} -> {self.to_state}"


class SuppressionQuerySet(models.QuerySet):
    def active(self, now):
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


class Suppression(models.Model):
    """Detections matching every non-empty pattern (fnmatch, case-sensitive) are not alerted, but
    counted here."""

    kind = models.CharField(max_length=32, choices=Kind.choices, blank=True, help_text="Empty: every kind.")
    account_pattern = models.CharField(max_length=64, blank=True, help_text="e.g. 111122223333; empty: any.")
    key_pattern = models.CharField(max_length=2048, blank=True, help_text="e.g. arn:aws:kms:*:key/1234*; empty: any.")
    principal_pattern = models.CharField(
        max_length=2048, blank=True, help_text="e.g. arn:aws:iam::*:role/scanner-*; empty: any."
    )
    reason = models.TextField()
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: until deleted.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    suppressed_count = models.BigIntegerField(default=0, help_text="Detections suppressed (events they counted).")
    last_suppressed_at = models.DateTimeField(null=True, blank=True)

    objects = SuppressionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind or 'any kind'}: {self.reason[:60]}"

    def matches(self, kind: str, *, account: str, key: str, principal: str) -> bool:
        return (
            (not self.kind or self.kind == kind)
            and (not self.account_pattern or fnmatchcase(account, self.account_pattern))
            and (not self.key_pattern or fnmatchcase(key, self.key_pattern))
            and (not self.principal_pattern or fnmatchcase(principal, self.principal_pattern))
        )

    def record(self, count: int, now) -> None:
        Suppression.objects.filter(pk=self.pk).update(
            suppressed_count=F("suppressed_count") + count, last_suppressed_at=now
        )


class AlertRule(models.Model):
    """A detection's switch and thresholds; `config` overrides the defaults in alerts/rules.py."""

    kind = models.CharField(max_length=32, choices=Kind.choices, unique=True)
    enabled = models.BooleanField(default=True)
    config = models.JSONField(default=dict, blank=True, help_text="Overrides of the defaults (see the README).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind"]

    def __str__(self) -> str:
        return self.kind


class Evaluation(models.Model):
    """The one row saying how far evaluation has read: the alert candidates of the events up to
    `candidate_id` (audits.models.AlertCandidate, written with the events), so events up to
    `event_id`, and findings up to `finding_id` have been judged (a watermark on what was ingested,
    not on the clock)."""

    candidate_id = models.BigIntegerField(default=0)
    event_id = models.BigIntegerField(default=0)
    finding_id = models.BigIntegerField(default=0)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    last_events = models.BigIntegerField(default=0, help_text="Events judged by the last evaluation.")
    last_seconds = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"evaluated up to event {self.event_id}"
