"""Cost Explorer's daily KMS figures, and the ledger of what reading them cost.

Cost rows are replaced, never merged: each run deletes the days of its window and inserts what
Cost Explorer now says about them, in one transaction, so restated amounts, groups that vanish
and the Estimated flag turning false all show exactly as AWS reports them.
"""

from __future__ import annotations

from django.db import models


class UsageClass(models.TextChoices):
    KEY_MONTHS = "key_months", "Key-months"
    SYMMETRIC = "symmetric", "Symmetric requests"
    ASYMMETRIC = "asymmetric", "Asymmetric requests"
    OTHER = "other", "Other"


class CostRecordQuerySet(models.QuerySet):
    def between(self, start, end):
        """Days start <= day <= end (both UTC dates, inclusive)."""
        return self.filter(day__gte=start, day__lte=end)


class CostRecord(models.Model):
    """One Cost Explorer group on one UTC day: (linked account, usage type) -> amount and usage."""

    day = models.DateField(help_text="UTC date of the Cost Explorer period.")
    account_id = models.CharField(max_length=12, help_text="LINKED_ACCOUNT")
    usage_type = models.CharField(max_length=256)
    # Both derived from usage_type by costs/prices.py when the row is written.
    usage_class = models.CharField(max_length=16, choices=UsageClass.choices)
    region = models.CharField(
        max_length=32, blank=True, help_text="Region prefix of the usage type; 'Global' for free-tier rows."
    )
    metric = models.CharField(max_length=32, help_text="The cost metric read, e.g. UnblendedCost.")
    # Cost Explorer sends decimal strings with up to 10 places; they are stored exactly.
    amount = models.DecimalField(max_digits=24, decimal_places=10)
    unit = models.CharField(max_length=16, default="USD")
    usage_quantity = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    usage_unit = models.CharField(max_length=32, blank=True)
    estimated = models.BooleanField(help_text="Cost Explorer's Estimated flag for this day.")
    fetched_at = models.DateTimeField()

    objects = CostRecordQuerySet.as_manager()

    class Meta:
        ordering = ["day", "account_id", "usage_type"]
        constraints = [
            models.UniqueConstraint(fields=["day", "account_id", "usage_type"], name="cost_record_unique_group"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.account_id} {self.usage_type} {self.amount} {self.unit}"


class CostRunQuerySet(models.QuerySet):
    def started_between(self, start, end):
        return self.filter(started_at__gte=start, started_at__lt=end)


class CostRun(models.Model):
    """One pass over Cost Explorer, with every request it sent (each one is billed $0.01)."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"

    window_start = models.DateField()
    window_end = models.DateField(help_text="Exclusive, as Cost Explorer's End.")
    metric = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    requests = models.PositiveIntegerField(default=0, help_text="HTTP requests sent, retries included.")
    pages = models.PositiveIntegerField(default=0)
    restarts = models.PositiveIntegerField(default=0, help_text="Queries restarted without a page token.")
    rows = models.PositiveIntegerField(default=0)
    via = models.CharField(max_length=16, default="task", help_text="task or cli")
    error = models.TextField(blank=True)

    objects = CostRunQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"Cost Explorer {self.window_start}..{self.window_end} {self.status} ({self.requests} requests)"
