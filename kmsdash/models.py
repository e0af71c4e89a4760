from __future__ import annotations

from django.conf import settings
from django.db import models


class ExportAudit(models.Model):
    """One CSV export: who, when, what filter, how many rows and the SHA-256 of the bytes sent.

    Written before the first byte leaves and completed from the stream's `finally`, so an aborted
    download is recorded too. Nobody edits or deletes these rows (the admin is read-only).
    """

    class Status(models.TextChoices):
        STARTED = "started"
        COMPLETED = "completed"
        ABORTED = "aborted"
        FAILED = "failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, help_text="Snapshot: the account may be renamed or deleted later.")
    kind = models.CharField(max_length=32, help_text="events, costs, ...")
    filters = models.JSONField(default=dict)
    via = models.CharField(max_length=16, default="web", help_text="web or cli")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTED)
    rows = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    row_cap = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="At most this many rows (KMSDASH_EXPORT_MAX_ROWS); none from the command line."
    )
    truncated = models.BooleanField(default=False, help_text="More rows matched than the cap let out.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("export_audit_csv", "Can export the KMS event audit CSV")]

    def __str__(self) -> str:
        return f"{self.kind} export by {self.username} at {self.created_at:%Y-%m-%d %H:%M}"


class LoginThrottle(models.Model):
    """Password attempts on one username from anywhere, for the per-username backoff (kmsdash/throttle.py).

    A row exists while a username has recent attempts that did not end in a login; a login deletes it.
    """

    username = models.CharField(max_length=150, unique=True)
    attempts = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField()
    # No attempt on this username (from a browser it never signed in from) is checked before then.
    next_attempt_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.username}: {self.attempts} attempts"


class Total(models.Model):
    """A running sum that /metrics reads instead of aggregating a ledger (kmsdash/totals.py).

    Each writer of a ledger adds to its totals in the transaction of the ledger change, so a total
    equals the ledger's aggregate at every commit and a scrape reads a few dozen rows however long
    the ledgers grow. `labels` is the labels' canonical JSON (sorted keys), the row's stable key.
    """

    name = models.CharField(max_length=64)
    labels = models.CharField(max_length=512)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="total_unique_name_labels")]

    def __str__(self) -> str:
        return f"{self.name}{self.labels} = {self.value}"
