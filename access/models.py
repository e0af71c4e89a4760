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
    rcps = models.JSONField(
        null=True,
        blank=True,
        help_text="Resource control policies over the account, in the SCPs' shape; None when not readable.",
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
        RCP = "rcp"

    class Change(models.TextChoices):
        ADDED = "added"
        REMOVED = "removed"
        CHANGED = "changed"

    snapshot = models.ForeignKey(AuthorizationSnapshot, on_delete=models.CASCADE, related_name="changes")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    arn = models.CharField(max_length=2048, help_text="The ARN (an SCP or RCP: its policy id).")
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


class KeyAnalysis(models.Model):
    """Who can use one key, as the last analysis found (access/analysis.py writes it, whole).

    The rights themselves are AccessEntry rows and the escalation paths EscalationPath rows; this
    row holds what the analysis could not read and when it ran."""

    key_arn = models.CharField(max_length=2048, unique=True)
    account_id = models.CharField(max_length=12)
    region = models.CharField(max_length=32)
    computed_at = models.DateTimeField()
    unreadable = models.JSONField(
        default=list, blank=True, help_text="[{document, statement, reason, principal}]: never taken as Allow or Deny."
    )
    scps_evaluated = models.BooleanField(default=False)
    scps_note = models.TextField(blank=True)

    class Meta:
        ordering = ["account_id", "region", "key_arn"]
        indexes = [models.Index(fields=["account_id"], name="access_keyanalysis_account")]

    def __str__(self) -> str:
        return f"access {self.key_arn}"


class AccessEntry(models.Model):
    """A principal's rights on a key through one path, in key_access's shape (without "used")."""

    analysis = models.ForeignKey(KeyAnalysis, on_delete=models.CASCADE, related_name="entries")
    key_arn = models.CharField(max_length=2048)
    principal = models.CharField(max_length=2048)
    actions = models.JSONField(default=list)
    conditional = models.BooleanField(default=False)
    conditions = models.JSONField(default=dict, blank=True)
    via = models.JSONField(default=list, help_text="[{kind: key-policy|identity-policy|grant|assume-role|..., name}]")
    notes = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["analysis", "principal", "id"]
        indexes = [models.Index(fields=["principal"], name="access_entry_principal")]

    def __str__(self) -> str:
        return f"{self.principal} on {self.key_arn}"


class EscalationPath(models.Model):
    """Steps by which a principal that cannot use a key could give itself the right."""

    analysis = models.ForeignKey(KeyAnalysis, on_delete=models.CASCADE, related_name="escalations")
    key_arn = models.CharField(max_length=2048)
    principal = models.CharField(max_length=2048)
    gains = models.JSONField(default=list)
    path = models.JSONField(default=list, help_text="[{action, on}]")

    class Meta:
        ordering = ["analysis", "principal", "id"]
        indexes = [models.Index(fields=["principal"], name="access_escalation_principal")]

    def __str__(self) -> str:
        return f"{self.principal} -> {self.key_arn} in {len(self.path)} steps"
