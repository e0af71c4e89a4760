"""The KMS key inventory (keys, aliases, grants, policies with history, trails) and the findings.

Everything here is written by inventory/services.py from the KMS and CloudTrail APIs, and by
inventory/findings.py from the inventory plus the CloudTrail rollups. History is append-only:
a changed key state or policy adds a row stamped with when it was first seen.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.db import models


class Key(models.Model):
    arn = models.CharField(max_length=2048, unique=True)
    key_id = models.CharField(max_length=128)
    account_id = models.CharField(max_length=12)
    region = models.CharField(max_length=32)
    description = models.TextField(blank=True)
    key_manager = models.CharField(max_length=16, blank=True, help_text="AWS or CUSTOMER")
    key_spec = models.CharField(max_length=32, blank=True)
    key_usage = models.CharField(max_length=32, blank=True)
    key_state = models.CharField(max_length=32, blank=True)
    origin = models.CharField(max_length=32, blank=True)
    multi_region = models.BooleanField(default=False)
    multi_region_type = models.CharField(max_length=16, blank=True, help_text="PRIMARY, REPLICA or ''")
    primary_arn = models.CharField(max_length=2048, blank=True)
    replica_arns = models.JSONField(default=list, blank=True)
    creation_date = models.DateTimeField(null=True, blank=True)
    deletion_date = models.DateTimeField(null=True, blank=True)
    rotation_enabled = models.BooleanField(null=True, help_text="None when the key cannot rotate automatically.")
    rotation_period_days = models.PositiveIntegerField(null=True, blank=True)
    rotations = models.PositiveIntegerField(default=0, help_text="Rotations so far (billing is capped at two).")
    on_demand_rotations = models.PositiveIntegerField(
        default=0, help_text="Of those, rotations asked for with RotateKeyOnDemand (AWS allows 10 per key)."
    )
    valid_to = models.DateTimeField(null=True, blank=True, help_text="When imported key material expires.")
    expiration_model = models.CharField(max_length=32, blank=True, help_text="KEY_MATERIAL_(DOES_NOT_)EXPIRES")
    tags = models.JSONField(default=dict, blank=True)
    policy = models.TextField(blank=True, help_text="The current default key policy (JSON text).")
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="From GetKeyLastUsage.")
    last_used_operation = models.CharField(max_length=64, blank=True)
    usage_tracking_start = models.DateTimeField(
        null=True, blank=True, help_text="From GetKeyLastUsage: since when KMS has tracked the key's use."
    )
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["account_id", "region", "arn"]
        indexes = [models.Index(fields=["account_id", "region"], name="inv_key_scope")]

    def __str__(self) -> str:
        return self.arn

    @property
    def customer_managed(self) -> bool:
        return self.key_manager == "CUSTOMER"


class KeyStateVersion(models.Model):
    """A key's state as first seen; a new row each time state, deletion date or rotation changes."""

    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="state_versions")
    key_state = models.CharField(max_length=32)
    deletion_date = models.DateTimeField(null=True, blank=True)
    rotation_enabled = models.BooleanField(null=True)
    first_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["key", "-first_seen_at", "-id"]

    def __str__(self) -> str:
        return f"{self.key_id} {self.key_state} @ {self.first_seen_at:%Y-%m-%d %H:%M}"


class PolicyVersion(models.Model):
    """A key policy document as first seen; a new row whenever the text changes."""

    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="policy_versions")
    version = models.PositiveIntegerField()
    document = models.TextField()
    sha256 = models.CharField(max_length=64)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["key", "-version"]
        constraints = [models.UniqueConstraint(fields=["key", "version"], name="inv_policy_version_unique")]

    def __str__(self) -> str:
        return f"{self.key_id} v{self.version}"


class Alias(models.Model):
    arn = models.CharField(max_length=2048, unique=True)
    name = models.CharField(max_length=256)
    account_id = models.CharField(max_length=12)
    region = models.CharField(max_length=32)
    target_key_id = models.CharField(max_length=128, blank=True)
    key = models.ForeignKey(Key, null=True, blank=True, on_delete=models.SET_NULL, related_name="aliases")
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "aliases"

    def __str__(self) -> str:
        return self.name


class Grant(models.Model):
    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="grants")
    grant_id = models.CharField(max_length=128)
    name = models.CharField(max_length=256, blank=True)
    grantee_principal = models.CharField(max_length=2048, blank=True)
    retiring_principal = models.CharField(max_length=2048, blank=True)
    issuing_account = models.CharField(max_length=2048, blank=True)
    operations = models.JSONField(default=list)
    constraints = models.JSONField(default=dict, blank=True)
    creation_date = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["key", "grant_id"]
        constraints = [models.UniqueConstraint(fields=["key", "grant_id"], name="inv_grant_unique")]

    def __str__(self) -> str:
        return f"{self.grant_id} -> {self.grantee_principal}"


class Trail(models.Model):
    """A CloudTrail trail with its event selectors, to tell whether KMS usage is visible at all."""

    arn = models.CharField(max_length=2048, unique=True)
    name = models.CharField(max_length=256)
    account_id = models.CharField(max_length=12)
    home_region = models.CharField(max_length=32)
    multi_region = models.BooleanField(default=False)
    organization = models.BooleanField(default=False)
    event_selectors = models.JSONField(default=list, blank=True)
    advanced_event_selectors = models.JSONField(default=list, blank=True)
    # Selectors come from GetEventSelectors, or (for a trail we cannot describe) from the latest
    # PutEventSelectors call in CloudTrail's event history, described by `change`.
    change = models.JSONField(default=dict, blank=True)
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["account_id", "name"]

    def __str__(self) -> str:
        return self.arn


class InventoryRun(models.Model):
    """The inventory ledger: one row per pass over one (account, region)."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"

    account_id = models.CharField(max_length=12)
    region = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    keys = models.PositiveIntegerField(default=0)
    aliases = models.PositiveIntegerField(default=0)
    grants = models.PositiveIntegerField(default=0)
    policy_changes = models.PositiveIntegerField(default=0)
    state_changes = models.PositiveIntegerField(default=0)
    events_reattributed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"inventory {self.account_id} {self.region} {self.status}"


class KeyReference(models.Model):
    """A resource that names a key as its encryption key (an S3 bucket's default encryption, an EBS
    volume, ...), as last read from its service. `key_ref` is what the resource says (key id, key
    ARN or alias); `key` is the key ARN it resolves to through the inventory ('' if it does not)."""

    account_id = models.CharField(max_length=12)
    region = models.CharField(max_length=32)
    service = models.CharField(max_length=32)
    resource_type = models.CharField(max_length=64)
    resource = models.CharField(max_length=2048, help_text="The resource's ARN or id.")
    key_ref = models.CharField(max_length=2048)
    key = models.CharField(max_length=2048, blank=True, db_index=True)
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["account_id", "region", "service", "resource"]
        indexes = [models.Index(fields=["account_id", "region", "service"], name="inv_ref_scope")]

    def __str__(self) -> str:
        return f"{self.resource} -> {self.key or self.key_ref}"


class ReferenceCheck(models.Model):
    """Whether one service of one (account, region) could be read for key references, and when:
    a service that could not be read is "not checked" (with why), never "no references"."""

    class Status(models.TextChoices):
        CHECKED = "checked"
        NOT_CHECKED = "not-checked"

    account_id = models.CharField(max_length=12)
    region = models.CharField(max_length=32)
    service = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices)
    reason = models.TextField(blank=True)
    resources = models.PositiveIntegerField(default=0, help_text="Resources read (with or without a key).")
    checked_at = models.DateTimeField()

    class Meta:
        ordering = ["account_id", "region", "service"]
        constraints = [
            models.UniqueConstraint(fields=["account_id", "region", "service"], name="inv_reference_check_unique")
        ]

    def __str__(self) -> str:
        return f"{self.service} {self.account_id} {self.region} {self.status}"


class EncryptionContextRule(models.Model):
    """Required encryption-context keys and allowed values, for keys chosen by ARN, alias or account.

    A rule applies to a key when every selector that is set matches; with none set it applies to
    every customer managed key.
    """

    name = models.CharField(max_length=200)
    key_arn = models.CharField(max_length=2048, blank=True)
    alias_pattern = models.CharField(max_length=256, blank=True, help_text="Shell pattern, e.g. alias/finance-*")
    account_id = models.CharField(max_length=12, blank=True)
    required_keys = models.JSONField(default=list, blank=True, help_text='e.g. ["Department"]')
    allowed_values = models.JSONField(
        default=dict, blank=True, help_text='e.g. {"Department": ["Finance", "HR", "Engineering", "Sales"]}'
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class FindingQuerySet(models.QuerySet):
    def open(self):
        return self.filter(resolved_at__isnull=True, accepted_at__isnull=True)


class Finding(models.Model):
    class Kind(models.TextChoices):
        POLICY_PUBLIC = "policy-public"
        POLICY_WILDCARD_ACTIONS = "policy-wildcard-actions"
        POLICY_CROSS_ACCOUNT = "policy-cross-account"
        GRANT_CROSS_ACCOUNT = "grant-cross-account"
        ROTATION_DISABLED = "rotation-disabled"
        PENDING_DELETION_IN_USE = "pending-deletion-in-use"
        DISABLED_KEY_IN_USE = "disabled-key-in-use"
        UNUSED_KEY = "unused-key"
        ENCRYPTION_CONTEXT_VIOLATION = "encryption-context-violation"
        TRAIL_EXCLUDES_KMS = "trail-excludes-kms"
        NEW_PRINCIPAL = "new-principal"
        # The access analysis' (access/findings.py).
        IAM_DECRYPT_ALL_KEYS_MANAGED = "iam-decrypt-all-keys-managed"
        IAM_DECRYPT_ALL_KEYS_INLINE = "iam-decrypt-all-keys-inline"
        ESCALATION_PATH = "escalation-path"
        UNUSED_ACCESS = "unused-access"
        ACCESS_UNEXPLAINED = "access-unexplained"
        REPLICA_POLICY_DRIFT = "replica-policy-drift"
        KEY_MATERIAL_EXPIRING = "key-material-expiring"
        KEY_MATERIAL_EXPIRED = "key-material-expired"
        ROTATION_ON_DEMAND_BUDGET = "rotation-on-demand-budget"
        KEY_CHURN = "key-churn"

    class Severity(models.TextChoices):
        CRITICAL = "critical"
        HIGH = "high"
        MEDIUM = "medium"
        LOW = "low"
        INFO = "info"

    # What makes two findings the same one across recomputations: kind + key/trail + detail.
    fingerprint = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=48, choices=Kind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    key = models.CharField(max_length=2048, blank=True, help_text="Key ARN ('' for a trail finding).")
    subject = models.CharField(max_length=2048, blank=True, help_text="The trail, grant or principal concerned.")
    account_id = models.CharField(max_length=12, blank=True)
    region = models.CharField(max_length=32, blank=True)
    summary = models.CharField(max_length=1024)
    evidence = models.JSONField(default=dict)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    accepted_reason = models.TextField(blank=True)

    objects = FindingQuerySet.as_manager()

    class Meta:
        ordering = ["-first_seen_at", "id"]
        indexes = [models.Index(fields=["resolved_at", "kind"], name="inv_finding_open_kind")]

    def __str__(self) -> str:
        return f"{self.kind} {self.key or self.subject}"

    @property
    def evidence_text(self) -> str:
        return json.dumps(self.evidence, indent=2, sort_keys=True, ensure_ascii=False)

    @property
    def status(self) -> str:
        if self.resolved_at:
            return "resolved"
        if self.accepted_at:
            return "accepted"
        return "open"


class FindingDecision(models.Model):
    """One acceptance of a finding's risk, or one revocation of it: the history that the finding's
    accepted_* columns (the decision in force) summarise. Rows are only ever added."""

    class Action(models.TextChoices):
        ACCEPTED = "accepted"
        REVOKED = "revoked"

    finding = models.ForeignKey(Finding, on_delete=models.PROTECT, related_name="decisions")
    action = models.CharField(max_length=16, choices=Action.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, help_text="Snapshot: the account may be renamed or deleted later.")
    reason = models.TextField()
    decided_at = models.DateTimeField()

    class Meta:
        ordering = ["finding", "decided_at", "id"]

    def __str__(self) -> str:
        return f"{self.action} {self.finding_id} by {self.username} at {self.decided_at:%Y-%m-%d %H:%M}"
