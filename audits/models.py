"""CloudTrail KMS events, their daily rollups, and the bookkeeping that makes ingestion exact.

Events are deduplicated on (recipient account, eventID); partitioned on PostgreSQL, on (recipient
account, eventID, event time), as exact: an event's time never changes (audits/partitions.py).
Rollups are written in the same transaction as the events they count, so every figure on every
page comes from rollups and never from a scan of raw events.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

from . import rawcodec
from .fields import CriticalFlag, HashedTextField, HashText, UniqueKey

account_id_validator = RegexValidator(r"^\d{12}$", "An AWS account id is 12 digits.")


class SourceQuerySet(models.QuerySet):
    def regions(self, *, account_id: str | None = None, region: str | None = None) -> list[tuple[Source, str]]:
        """(source, region) for each enabled source and each of its regions (or the one named)."""
        sources = self.filter(enabled=True)
        if account_id:
            sources = sources.filter(account_id=account_id)
        return [
            (source, source_region)
            for source in sources
            for source_region in source.regions or []
            if region is None or source_region == region
        ]

    def scopes(
        self, kinds=("lookup", "s3"), *, account_id: str | None = None, region: str | None = None
    ) -> list[tuple[str, str, str]]:
        """The (kind, account, region) scopes the scheduled sources of `kinds` read: every enabled
        source's regions, LookupEvents where enabled, S3 where a bucket is set."""
        return [
            (kind, source.account_id, source_region)
            for source, source_region in self.regions(account_id=account_id, region=region)
            for kind in kinds
            if source.reads(kind)
        ]


class Source(models.Model):
    """An AWS account to watch, with the regions to read and how to reach it.

    Credentials are never stored: the boto3 default chain provides them, optionally followed by
    an AssumeRole into `role_arn` with `external_id` (confused-deputy protection).
    """

    account_id = models.CharField(max_length=12, unique=True, validators=[account_id_validator])
    name = models.CharField(max_length=200, blank=True)
    regions = models.JSONField(default=list, help_text='AWS regions to read, e.g. ["us-east-1"].')
    role_arn = models.CharField(max_length=2048, blank=True)
    external_id = models.CharField(max_length=1224, blank=True)
    s3_bucket = models.CharField(max_length=63, blank=True, help_text="Bucket of the CloudTrail trail's log files.")
    s3_prefix = models.CharField(max_length=1024, blank=True)
    org_id = models.CharField(max_length=34, blank=True, help_text="Organization id, for organization trails.")
    lookup_enabled = models.BooleanField(default=True, help_text="Read CloudTrail LookupEvents.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SourceQuerySet.as_manager()

    class Meta:
        ordering = ["account_id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.account_id})" if self.name else self.account_id

    @property
    def has_s3(self) -> bool:
        return bool(self.s3_bucket)

    def reads(self, kind: str) -> bool:
        """Whether the scheduled source `kind` (lookup, s3) reads this account."""
        if kind == IngestRun.Kind.LOOKUP:
            return self.lookup_enabled
        if kind == IngestRun.Kind.S3:
            return self.has_s3
        raise ValueError(f"unknown source kind {kind!r}")


class Event(models.Model):
    """One KMS CloudTrail event, normalized (see audits/cloudtrail.py for every rule).

    Text dimensions are '' rather than NULL so that rollup keys compare equal in SQL.
    """

    recipient_account_id = models.CharField(max_length=12)
    event_id = models.CharField(max_length=64)
    event_time = models.DateTimeField()
    event_name = models.CharField(max_length=64)
    region = models.CharField(max_length=32)
    key = HashedTextField(max_length=2048, blank=True, help_text="Key ARN, else the alias or id given, else ''.")
    principal = HashedTextField(max_length=2048, blank=True)
    principal_type = models.CharField(max_length=32, blank=True)
    session_name = models.CharField(max_length=256, blank=True)
    service = models.CharField(max_length=256, blank=True, help_text="userIdentity.invokedBy")
    caller_account_id = models.CharField(max_length=12, blank=True)
    source_ip = models.CharField(max_length=256, blank=True)
    user_agent = models.CharField(max_length=1024, blank=True)
    error_code = models.CharField(max_length=128, blank=True)
    error_message = models.TextField(blank=True)
    read_only = models.BooleanField(null=True)
    event_type = models.CharField(max_length=32, blank=True)
    event_category = models.CharField(max_length=32, blank=True)
    encryption_context = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    shared_event_id = models.CharField(max_length=64, blank=True)
    vpc_endpoint_id = models.CharField(max_length=128, blank=True)
    s3_bucket = models.CharField(max_length=256, blank=True, help_text="Bucket named by an aws:s3:arn context.")
    after_hours = models.BooleanField(default=False)
    quota_class = models.CharField(
        max_length=48, blank=True, default="", help_text="The KMS request quota it counts against (audits.cloudtrail)."
    )
    # One of kmsdash's own calls (audits.cloudtrail.OwnCalls): kept, but left out of every count
    # unless a page's "kmsdash's own calls" switch is on.
    own = models.BooleanField(default=False)
    # event_name in CRITICAL_EVENT_NAMES, stored: kept for good by retention, and on PostgreSQL the
    # partition that holds them (audits/partitions.py).
    critical = CriticalFlag()
    # The whole record, in a block compressed with the other records of its batch. No index and
    # no constraint: the block is only ever read through its event, and both are written in one
    # transaction. NULL only for rows made by hand (tests); ingestion always keeps the record.
    raw_block = models.ForeignKey(
        "RawBlock",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    raw_index = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # On a 16-byte hash of the pair on PostgreSQL (audits/fields.py): a third of the index's size.
            models.UniqueConstraint(UniqueKey("recipient_account_id", "event_id"), name="event_unique_per_account"),
        ]
        indexes = [
            models.Index(fields=["event_time", "id"], name="event_time_id"),
            # On the hash of the ARN (audits/fields.py): a quarter of the size of the ARN itself.
            models.Index(HashText("key"), "event_time", name="event_key_time"),
            models.Index(HashText("principal"), "event_time", name="event_principal_time"),
            # The explorer's error filters (error=any, or a code) read only failed events: a few
            # percent of the table, so this index is small and spares a scan of every call.
            models.Index(fields=["event_time", "id"], condition=~models.Q(error_code=""), name="event_failed_time_id"),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} {self.event_time:%Y-%m-%d %H:%M:%S} {self.event_id}"

    @property
    def failed(self) -> bool:
        return bool(self.error_code)

    def raw_record(self) -> dict | None:
        """The record as it arrived (re-serialised compactly), or None when none was kept."""
        if self.raw_block_id is None:
            return None
        block = RawBlock.objects.filter(pk=self.raw_block_id).values_list("data", flat=True).first()
        return None if block is None else rawcodec.record_at(block, self.raw_index)


class RawBlock(models.Model):
    """The raw records of up to rawcodec.BLOCK_RECORDS events of one batch, compressed together."""

    data = models.BinaryField()
    # The latest event time among the block's records: the retention purge drops a block once every
    # event it holds is older than the purge horizon, without searching events by block.
    last_event_time = models.DateTimeField(null=True, blank=True)
    # Holds the record of a critical event, kept for good. With partitioned events a block holds
    # only critical records or none, and one UTC day's (audits/partitions.py).
    critical = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"raw block {self.pk}"


class DayScope(models.Model):
    """The UTC day and the (recipient account, region) that every rollup and summary row counts in."""

    day = models.DateField()
    account_id = models.CharField(max_length=12)  # recipient account
    region = models.CharField(max_length=32)

    class Meta:
        abstract = True


class DailyCount(DayScope):
    """How many events a row counts, and the first and last of them."""

    count = models.BigIntegerField()
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        abstract = True


class DailyRollup(DailyCount):
    """Event counts per UTC day and every dimension the pages filter or group by.

    `count` only ever grows by the number of events actually inserted, in the same transaction,
    so duplicates and re-runs leave it unchanged; it always equals a GROUP BY over Event.
    """

    key = models.CharField(max_length=2048)
    operation = models.CharField(max_length=64)
    principal = HashedTextField(max_length=2048)
    service = models.CharField(max_length=256)
    error_code = models.CharField(max_length=128)
    after_hours = models.BooleanField()
    # kmsdash's own calls (Event.own) are counted here apart; the other summaries leave them out.
    own = models.BooleanField(default=False)

    class Meta:
        constraints = [
            # The upsert's conflict target; a 16-byte hash of the ten dimensions on PostgreSQL (audits/fields.py).
            models.UniqueConstraint(
                UniqueKey(
                    "day",
                    "account_id",
                    "region",
                    "key",
                    "operation",
                    "principal",
                    "service",
                    "error_code",
                    "after_hours",
                    "own",
                ),
                name="rollup_unique_dims",
            ),
        ]
        indexes = [
            models.Index(fields=["key", "day"], name="rollup_key_day"),
            models.Index(fields=["day"], name="rollup_day"),
            # The keys and overview pages filtered by a principal read only that principal's rows.
            models.Index(HashText("principal"), "day", name="rollup_principal_day"),
            # kmsdash's own calls of a day (few), which OperationDay leaves out: with it, the events of
            # a day partition the retention purge drops are counted without reading them.
            models.Index(fields=["day"], condition=models.Q(own=True), name="rollup_own_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.operation} {self.key} x{self.count}"


# Summaries of DailyRollup without its widest dimensions (principal and service multiply its rows),
# so that whole-period pages aggregate thousands of rows instead of millions. Each is written in
# the same transaction as the rollups and always equals a GROUP BY over Event.


class KeyDay(DayScope):
    """Calls per UTC day and key, with the per-key figures of the keys page as columns."""

    key = models.CharField(max_length=2048)
    calls = models.BigIntegerField()
    encrypt = models.BigIntegerField()
    decrypt = models.BigIntegerField()
    generate = models.BigIntegerField(help_text="GenerateDataKey*")
    failed = models.BigIntegerField()
    after_hours_calls = models.BigIntegerField()
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "account_id", "region", "key"], name="keyday_unique_dims"),
        ]
        indexes = [models.Index(fields=["key", "day"], name="keyday_key_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.key} x{self.calls}"


class OperationDay(DailyCount):
    """Calls per UTC day, operation, error code and after-hours flag: the overview's charts."""

    operation = models.CharField(max_length=64)
    error_code = models.CharField(max_length=128)
    after_hours = models.BooleanField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "account_id", "region", "operation", "error_code", "after_hours"],
                name="operationday_unique_dims",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.operation} x{self.count}"


class PrincipalDay(DailyCount):
    """Calls per UTC day and principal: unique principals of a period without scanning rollups."""

    principal = models.CharField(max_length=2048)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "account_id", "region", "principal"], name="principalday_unique_dims"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.principal} x{self.count}"


class IngestRun(models.Model):
    """The ledger: one row per pass of one source over one (account, region) window or file set."""

    class Kind(models.TextChoices):
        LOOKUP = "lookup", "LookupEvents"
        S3 = "s3", "S3 log files"
        FILES = "files", "Local files"

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    account_id = models.CharField(max_length=12, blank=True)
    region = models.CharField(max_length=32, blank=True)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    files = models.PositiveIntegerField(default=0)
    pages = models.PositiveIntegerField(default=0)
    records_read = models.PositiveBigIntegerField(default=0)
    events_new = models.PositiveBigIntegerField(default=0)
    duplicates = models.PositiveBigIntegerField(default=0)
    ignored = models.PositiveBigIntegerField(default=0)
    quarantined = models.PositiveBigIntegerField(default=0)
    expired = models.PositiveBigIntegerField(
        default=0, help_text="Records older than the retention purge's horizon, not stored (audits/retention.py)."
    )
    error = models.TextField(blank=True)
    checkpoint_to = models.DateTimeField(
        null=True,
        blank=True,
        help_text="S3 pass read by claims: where the scope's checkpoint moves once every claim has settled "
        "(none for a backfill, which never moves it).",
    )

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["kind", "account_id", "region", "-started_at"], name="run_scope_recent"),
            # A scope's newest failure without walking its history (the health page, /metrics):
            # failures are a small share of the runs, so this index is small.
            models.Index(
                fields=["kind", "account_id", "region", "-started_at"],
                condition=models.Q(status="failed"),
                name="run_scope_failures",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.account_id or '-'} {self.region or '-'} {self.status}"


class CheckpointQuerySet(models.QuerySet):
    def watermark(self, kind: str, account_id: str, region: str):
        """How far `kind` has read (account_id, region), or None before its first pass."""
        return (
            self.filter(kind=kind, account_id=account_id, region=region)
            .values_list("high_watermark", flat=True)
            .first()
        )


class Checkpoint(models.Model):
    """How far a source has read an (account, region): moves only after a whole window committed."""

    kind = models.CharField(max_length=16, choices=IngestRun.Kind.choices)
    account_id = models.CharField(max_length=12)
    region = models.CharField(max_length=32)
    high_watermark = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    objects = CheckpointQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "account_id", "region"], name="checkpoint_unique_scope"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.account_id} {self.region} @ {self.high_watermark:%Y-%m-%d %H:%M}"


class ProcessedObject(models.Model):
    """S3 log files already ingested, by key and ETag, so a re-run skips them."""

    bucket = models.CharField(max_length=63)
    key = models.CharField(max_length=1024)
    etag = models.CharField(max_length=128)
    records = models.PositiveIntegerField(default=0)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bucket", "key", "etag"], name="processed_object_unique"),
        ]

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class ObjectClaim(models.Model):
    """One S3 object an S3 pass listed to read, claimed by one reader at a time (audits/sources/s3.py).

    A reader takes a batch of pending claims (SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL) and
    leases them until `lease_expires`; an expired lease, whose reader died, may be taken by another.
    A claim is settled (done or failed) in the transaction that commits the object's last records."""

    class State(models.TextChoices):
        PENDING = "pending"
        LEASED = "leased"
        DONE = "done"
        FAILED = "failed"

    run = models.ForeignKey(IngestRun, on_delete=models.CASCADE, related_name="claims")
    bucket = models.CharField(max_length=63)
    key = models.CharField(max_length=1024)
    etag = models.CharField(max_length=128)
    size = models.PositiveBigIntegerField(default=0)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a reader took it.")
    # failed: "retry" when the next pass reads it again (a read error, a denied GetObject), which
    # keeps the checkpoint where it is; otherwise the object was quarantined (audits.Quarantine).
    retry = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="object_claim_unique_key")]
        indexes = [models.Index(fields=["run", "state"], name="object_claim_run_state")]

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key} {self.state}"


class Quarantine(models.Model):
    """A record or file that could not be ingested, with the reason and (a bounded copy of) its text."""

    run = models.ForeignKey(IngestRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="quarantine")
    location = models.CharField(max_length=2048, blank=True, help_text="File, S3 object or API window it came from.")
    reason = models.TextField()
    raw = models.TextField(blank=True)
    raw_truncated = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "quarantine"
        constraints = [
            # A record re-read (an overlapping LookupEvents window, a retried file) is kept once; on
            # a 16-byte hash of the three texts on PostgreSQL (audits/fields.py).
            models.UniqueConstraint(UniqueKey("location", "reason", "raw"), name="quarantine_unique_record"),
        ]

    def __str__(self) -> str:
        return f"{self.location}: {self.reason[:80]}"


class KeyPrincipalDay(DailyCount):
    """Calls per UTC day, key and principal: a key's unique principals without its rollups.

    Its unique index leads with the key and holds every dimension, so the principals of a page
    of keys are read from the index alone.
    """

    key = models.CharField(max_length=2048)
    principal = models.CharField(max_length=2048)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["key", "day", "account_id", "region", "principal"], name="keyprincipalday_unique_dims"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.key} {self.principal} x{self.count}"


class KeyServiceDay(DailyCount):
    """Calls per UTC day, key and invoking service: a key's unique services without its rollups."""

    key = models.CharField(max_length=2048)
    service = models.CharField(max_length=256)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["key", "day", "account_id", "region", "service"], name="keyserviceday_unique_dims"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.key} {self.service} x{self.count}"


class BucketDay(DailyCount):
    """Calls per UTC day, key and S3 bucket (events whose `aws:s3:arn` context names one), for the
    Bucket Key savings without scanning events.

    `object_calls` counts the calls whose context names an object rather than the bucket: made
    without an S3 Bucket Key (audits.cloudtrail.s3_context_names_object).
    """

    key = models.CharField(max_length=2048)
    s3_bucket = models.CharField(max_length=256)
    object_calls = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "account_id", "region", "key", "s3_bucket"], name="bucketday_unique_dims"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.s3_bucket} {self.key} x{self.count}"


class Retention(models.Model):
    """The one row saying how far the retention purge has gone (KMSDASH_EVENT_RETENTION_DAYS).

    Events older than `purged_before` are gone, except critical key-management events, which are
    kept for good; rollups and summaries are never purged, so every count stays whole. Ingestion
    refuses (and counts as expired) the other records older than `purged_before`: whether they had
    been counted before can no longer be told, and counting one twice would be worse.
    """

    purged_before = models.DateTimeField(null=True, blank=True)
    purged_at = models.DateTimeField(null=True, blank=True)
    events_deleted = models.PositiveBigIntegerField(default=0)
    raw_blocks_deleted = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "retention"

    def __str__(self) -> str:
        return f"events purged before {self.purged_before:%Y-%m-%d}" if self.purged_before else "nothing purged"


class HourScope(models.Model):
    """The UTC hour (its start) and the (recipient account, region) that an hourly summary row counts in."""

    hour = models.DateTimeField()
    account_id = models.CharField(max_length=12)  # recipient account
    region = models.CharField(max_length=32)

    class Meta:
        abstract = True


class HourlyCalls(HourScope):
    """Calls, failures and after-hours calls, and the first and last of them."""

    calls = models.BigIntegerField()
    failed = models.BigIntegerField()
    after_hours_calls = models.BigIntegerField()
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        abstract = True


class KeyHour(HourlyCalls):
    """Calls per UTC hour and key: for alerts on a key's usage and the hourly views."""

    key = models.CharField(max_length=2048)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "hour", "account_id", "region"], name="keyhour_unique_dims"),
        ]
        indexes = [models.Index(fields=["hour"], name="keyhour_hour")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} {self.key} x{self.calls}"


class KeyPrincipalHour(HourlyCalls):
    """Calls per UTC hour, key and principal: for alerts on who uses a key, and how."""

    key = models.CharField(max_length=2048)
    principal = models.CharField(max_length=2048)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["key", "hour", "account_id", "region", "principal"], name="keyprincipalhour_unique_dims"
            ),
        ]
        indexes = [models.Index(fields=["hour"], name="keyprincipalhour_hour")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} {self.key} {self.principal} x{self.calls}"


class KeyPrincipalErrorHour(HourScope):
    """Failed calls per UTC hour, key, principal and error code: for alerts on bursts of failures.

    Only failed events have rows, so the table stays a small fraction of KeyPrincipalHour."""

    key = models.CharField(max_length=2048)
    principal = models.CharField(max_length=2048)
    error_code = models.CharField(max_length=128)
    failed = models.BigIntegerField()
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["key", "principal", "error_code", "hour", "account_id", "region"],
                name="keyprincipalerrorhour_unique_dims",
            ),
        ]
        indexes = [models.Index(fields=["hour"], name="keyprincipalerrorhour_hour")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} {self.key} {self.principal} {self.error_code} x{self.failed}"


class ApiTurn(models.Model):
    """When the next call to one rate-limited AWS API of one (account, region) may start.

    AWS's quota is per account and region, so every caller in every process claims its turn here
    (audits/sources/pacing.py) instead of in a process-local object."""

    account_id = models.CharField(max_length=12)
    region = models.CharField(max_length=32)
    api = models.CharField(max_length=64)
    # Seconds since the epoch (time.time()): a wall clock, because processes share no monotonic one.
    next_at = models.FloatField(default=0.0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account_id", "region", "api"], name="apiturn_scope_unique")]

    def __str__(self) -> str:
        return f"{self.api} {self.account_id}/{self.region}"


class QuotaMinute(models.Model):
    """Calls per UTC minute, (recipient account, region) and request quota: the rate AWS throttles
    on (its CallCount metric / 60).

    Only calls that count against one of the account's KMS request quotas have rows
    (audits.cloudtrail.quota_class_of); the recipient is then the calling account."""

    minute = models.DateTimeField()
    account_id = models.CharField(max_length=12)
    region = models.CharField(max_length=32)
    quota_class = models.CharField(max_length=48)
    calls = models.BigIntegerField()
    throttled = models.BigIntegerField(help_text="Calls refused with ThrottlingException.")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "account_id", "region", "quota_class"], name="quotaminute_unique_dims"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.quota_class} x{self.calls}"


class AlertCandidate(models.Model):
    """What alert evaluation needs of one ingest batch's new events, written in the batch's
    transaction (audits/candidates.py) so that evaluation reads these few rows instead of scanning
    the events. Evaluation reads them above its watermark (alerts.models.Evaluation.candidate_id)
    and deletes them once judged.

    kind "group": the batch's new events (not kmsdash's own) per hour and every dimension a
    detection filters or groups on, with their count and first and last times. kind "call": one
    successful key-management call (audits.cloudtrail.CRITICAL_EVENT_NAMES), with the few request
    fields the detections read (`detail`), so no raw block is decompressed. kind "minute": a
    (minute, account, region, quota class) the batch touched whose total after the batch reached a
    tenth of the lowest quota that could apply, or that has throttled calls."""

    class Kind(models.TextChoices):
        GROUP = "group"
        CALL = "call"
        MINUTE = "minute"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    # The hour (group), the event time (call) or the minute (minute).
    at = models.DateTimeField()
    account_id = models.CharField(max_length=12)  # recipient account
    region = models.CharField(max_length=32)
    key = models.CharField(max_length=2048, blank=True)
    principal = models.CharField(max_length=2048, blank=True)
    principal_type = models.CharField(max_length=32, blank=True)
    caller_account_id = models.CharField(max_length=12, blank=True)
    error_code = models.CharField(max_length=128, blank=True)
    after_hours = models.BooleanField(default=False)
    n = models.BigIntegerField(default=1)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    # call: the event, its operation, invokedBy and request fields (JSON text, '' if none are read).
    event_pk = models.BigIntegerField(null=True, blank=True)
    event_name = models.CharField(max_length=64, blank=True)
    service = models.CharField(max_length=256, blank=True)
    detail = models.TextField(blank=True)
    # minute: its request quota.
    quota_class = models.CharField(max_length=48, blank=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.at:%Y-%m-%d %H:%M} {self.key} x{self.n}"
