"""What IAM says about each configured account, with history, and the ledger of its reads.

Written by access/ingest.py only. A snapshot is the account's complete
GetAccountAuthorizationDetails answer (AWS's own response shape, every page merged) plus the
Organizations service control policies that apply to it; a new row is added only when that
content changes, as inventory does for key policies, with one change row per principal or policy
that was added, removed or changed.
"""

from __future__ import annotations

from django.db import models


class AuthorizationSnapshot(models.Model):
    """One account's IAM authorization details and SCPs as first seen (append-only by version)."""

    account_id = models.CharField(max_length=12)
    version = models.PositiveIntegerField()
    # sha256 of the content without the fields that change with use alone (RoleLastUsed), so a
    # re-read of an unchanged account adds no row.
    sha256 = models.CharField(max_length=64)
    details = models.JSONField(
        help_text="GetAccountAuthorizationDetails: UserDetailList, GroupDetailList, RoleDetailList, Policies."
    )
    scps = models.JSONField(
        null=True,
        blank=True,
        help_text="[{Id, Name, Content, TargetId, TargetType}], one per attachment on the account, "
        "its OUs and the root; None when the account cannot read them (SCPs not evaluated).",
    )
    scps_note = models.TextField(blank=True, help_text="Why SCPs were not evaluated, or why there are none.")
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["account_id", "-version"]
        constraints = [models.UniqueConstraint(fields=["account_id", "version"], name="access_snapshot_version_unique")]

    def __str__(self) -> str:
        return f"IAM {self.account_id} v{self.version}"

    @property
    def scps_evaluated(self) -> bool:
        return self.scps is not None


class AuthorizationChange(models.Model):
    """One principal, group, policy or SCP that a new snapshot added, removed or changed."""

    class Kind(models.TextChoices):
        USER = "user"
        GROUP = "group"
        ROLE = "role"
        POLICY = "policy"
        SCP = "scp"

    class Change(models.TextChoices):
        ADDED = "added"
        REMOVED = "removed"
        CHANGED = "changed"

    snapshot = models.ForeignKey(AuthorizationSnapshot, on_delete=models.CASCADE, related_name="changes")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    arn = models.CharField(max_length=2048, help_text="The ARN (an SCP: its policy id).")
    change = models.CharField(max_length=16, choices=Change.choices)

    class Meta:
        ordering = ["snapshot", "kind", "arn"]
        indexes = [models.Index(fields=["arn"], name="access_change_arn")]

    def __str__(self) -> str:
        return f"{self.change} {self.kind} {self.arn}"


class IamRun(models.Model):
    """The IAM ledger: one row per read of one account."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    account_id = models.CharField(max_length=12)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    pages = models.PositiveIntegerField(default=0)
    users = models.PositiveIntegerField(default=0)
    groups = models.PositiveIntegerField(default=0)
    roles = models.PositiveIntegerField(default=0)
    policies = models.PositiveIntegerField(default=0)
    changes = models.PositiveIntegerField(default=0, help_text="Principals/policies changed since the last read.")
    scps_evaluated = models.BooleanField(default=False)
    scps_note = models.TextField(blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"iam {self.account_id} {self.status}"
