"""The demo world: two AWS accounts, twenty KMS keys over three regions, and a month of their use.

Pure data and pure functions (no database, no network), deterministic for a seed. The seeder
creates the keys in the emulator first, then calls `generate_activity` with the ARNs it got back,
so every event names a key that the inventory also knows.

The month has a rhythm (business-hours peaks in each region's local time, quiet weekends,
nightly batch jobs) and a few stories that the pages should make visible:
- bursts (SPIKES): a backfill on prod-orders-s3 that trips KMS request throttling, a data lake
  reprocessing job, a replay of the orders stream two days ago (the volume-spike alert);
- prod-legacy-reports disabled, while a nightly report job still calls it (DisabledException);
- data-old-migration scheduled for deletion, and stragglers hitting KMSInvalidStateException;
- a new ml-training role denied on the data lake key one night (AccessDeniedException);
- the root user of prod changing a key policy after hours;
- cross-account use in both directions (the key owner and the caller each log their copy);
- S3 buckets with and without S3 Bucket Keys, DynamoDB tables, Secrets Manager secrets, EBS
  volumes and Lambda functions as encryption contexts, and an application context
  (Department/DataClassification) that some callers get wrong.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from audits.synthetic import (
    identity_account,
    identity_role,
    identity_root,
    identity_service,
    identity_user,
    kms_record,
)
from kmsdash.dates import parse_utc

PROD = "111122223333"
DATA = "444455556666"
ACCOUNTS = {PROD: "prod", DATA: "data"}
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
# Hours from UTC to the region's business day (standard time is close enough for a rhythm).
REGION_UTC_OFFSET = {"us-east-1": -5, "eu-west-1": 0, "ap-southeast-2": 11}

# Share of a business hour's traffic in each local hour: quiet nights, a 02:00 batch window,
# a morning ramp and an afternoon plateau.
HOUR_PROFILE = (
    0.10, 0.08, 0.30, 0.22, 0.08, 0.10, 0.25, 0.55, 0.85, 1.00, 1.00, 0.95,
    0.80, 0.95, 1.00, 1.00, 0.90, 0.70, 0.50, 0.35, 0.25, 0.20, 0.15, 0.12,
)  # fmt: skip
WEEKEND_FACTOR = 0.35
DEFAULT_EVENTS_PER_DAY = 3000
# Failures that happen everywhere, on top of the stories: a small steady background.
BACKGROUND_FAILURE_RATE = 0.017

AGENTS = (
    "aws-sdk-java/2.25.31 Linux/5.10 OpenJDK_64-Bit_Server_VM/17.0.10",
    "Boto3/1.34.84 md/Botocore#1.34.84 ua/2.0 os/linux#5.10 lang/python#3.11.8",
    "aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.2",
    "aws-sdk-js/3.556.0 ua/2.0 os/linux lang/js md/nodejs#20.12.1",
)
CONSOLE_AGENT = "AWS Internal"
CLI_AGENT = "aws-cli/2.15.40 md/awscrt#0.19.19 ua/2.0 os/macos#23.4.0 md/command#kms.describe-key"


@dataclass(frozen=True)
class KeySpec:
    """One key of the demo world, as it is created in the emulator."""

    account: str
    region: str
    alias: str  # without the "alias/" prefix
    description: str
    workload: str  # s3, s3-bucket-key, dynamodb, secretsmanager, ebs, lambda, app, signing, none (unused)
    share: float  # relative traffic
    resource: str = ""  # bucket, table, secret, function or department the workload uses
    rotation: bool = True
    state: str = "Enabled"  # Enabled, Disabled (story), PendingDeletion (story)
    key_spec: str = "SYMMETRIC_DEFAULT"
    key_usage: str = "ENCRYPT_DECRYPT"
    tags: dict[str, str] = field(default_factory=dict)
    # Callers from the other account (the key policy lets them in).
    cross_account_role: str = ""
    # Keys predate the month; the emulator is told so, which lets "unused for 90 days" hold.
    created_days_ago: int = 400

    @property
    def alias_name(self) -> str:
        return f"alias/{self.alias}"


def _tags(team: str, env: str, classification: str) -> dict[str, str]:
    return {"Team": team, "Environment": env, "DataClassification": classification}


KEYS: tuple[KeySpec, ...] = (
    # --- prod, us-east-1
    KeySpec(PROD, "us-east-1", "prod-orders-s3", "Orders archive (SSE-KMS, no Bucket Key)", "s3", 16,
            "prod-orders-archive", tags=_tags("orders", "prod", "confidential"),
            cross_account_role="etl-runner"),
    KeySpec(PROD, "us-east-1", "prod-invoices-s3", "Invoices bucket (SSE-KMS with S3 Bucket Key)", "s3-bucket-key",
            1.2, "prod-invoices", tags=_tags("billing", "prod", "confidential")),
    KeySpec(PROD, "us-east-1", "prod-orders-dynamodb", "DynamoDB Orders table", "dynamodb", 7, "Orders",
            tags=_tags("orders", "prod", "confidential")),
    KeySpec(PROD, "us-east-1", "prod-db-secrets", "Secrets Manager: database credentials", "secretsmanager", 3,
            "prod/orders/db-password", tags=_tags("platform", "prod", "restricted")),
    KeySpec(PROD, "us-east-1", "prod-ebs", "EBS volumes of the orders fleet", "ebs", 2.5, "orders-fleet",
            rotation=False, tags=_tags("platform", "prod", "internal")),
    KeySpec(PROD, "us-east-1", "prod-payments-app", "Payments service envelope encryption", "app", 9, "Payments",
            tags=_tags("payments", "prod", "restricted")),
    # --- prod, eu-west-1
    KeySpec(PROD, "eu-west-1", "prod-eu-customers-s3", "EU customer documents (GDPR)", "s3", 8,
            "prod-eu-customer-docs", tags=_tags("customers", "prod", "restricted")),
    KeySpec(PROD, "eu-west-1", "prod-eu-sessions", "DynamoDB Sessions table", "dynamodb", 5, "Sessions",
            tags=_tags("web", "prod", "internal")),
    KeySpec(PROD, "eu-west-1", "prod-eu-lambda", "Lambda environment variables", "lambda", 3, "checkout-api",
            rotation=False, tags=_tags("web", "prod", "internal")),
    # --- prod, ap-southeast-2
    KeySpec(PROD, "ap-southeast-2", "prod-apac-backup", "APAC backups (SSE-KMS with S3 Bucket Key)",
            "s3-bucket-key", 0.8, "prod-apac-backups", tags=_tags("platform", "prod", "internal")),
    KeySpec(PROD, "ap-southeast-2", "prod-legacy-reports", "Legacy reporting (being retired)", "app", 1.5,
            "Finance", rotation=False, state="Disabled", tags=_tags("finance", "prod", "confidential")),
    # --- data, us-east-1
    KeySpec(DATA, "us-east-1", "data-lake-s3", "Data lake raw zone (SSE-KMS, no Bucket Key)", "s3", 14,
            "data-lake-raw", tags=_tags("data", "prod", "confidential")),
    KeySpec(DATA, "us-east-1", "data-warehouse", "Warehouse extracts envelope encryption", "app", 6, "Analytics",
            tags=_tags("data", "prod", "confidential"), cross_account_role="reporting-service"),
    KeySpec(DATA, "us-east-1", "data-etl-secrets", "Secrets Manager: ETL credentials", "secretsmanager", 2,
            "data/etl/warehouse-login", tags=_tags("data", "prod", "restricted")),
    KeySpec(DATA, "us-east-1", "data-signing", "Release artifact signing", "signing", 1, "release-signer",
            rotation=False, key_spec="RSA_2048", key_usage="SIGN_VERIFY", tags=_tags("platform", "prod", "internal"),
            created_days_ago=20),
    # --- data, eu-west-1
    KeySpec(DATA, "eu-west-1", "data-eu-lake-s3", "EU data lake (SSE-KMS with S3 Bucket Key)", "s3-bucket-key", 1.0,
            "data-eu-lake", tags=_tags("data", "prod", "confidential")),
    KeySpec(DATA, "eu-west-1", "data-eu-archive-2023", "2023 archive export (nothing reads it any more)", "none", 0,
            tags=_tags("data", "prod", "internal")),
    KeySpec(DATA, "eu-west-1", "data-eu-pipeline", "Lambda pipeline environment", "lambda", 2.5, "ingest-pipeline",
            tags=_tags("data", "prod", "internal")),
    # --- data, ap-southeast-2
    KeySpec(DATA, "ap-southeast-2", "data-apac-dynamodb", "DynamoDB Events table", "dynamodb", 3, "Events",
            tags=_tags("data", "prod", "internal")),
    KeySpec(DATA, "ap-southeast-2", "data-old-migration", "One-off migration (scheduled for deletion)", "app", 1.2,
            "Migration", rotation=False, state="PendingDeletion", tags=_tags("data", "staging", "internal")),
)  # fmt: skip

# Roles that call each workload directly, per account.
APP_ROLES = {
    PROD: ("orders-api", "payments-worker", "checkout-api", "report-builder"),
    DATA: ("etl-runner", "spark-driver", "analytics-notebook", "ingest-worker"),
}
ADMIN_USERS = {PROD: ("alice.admin", "bob.sre"), DATA: ("carol.data", "dave.platform")}
OTHER_ACCOUNT = {PROD: DATA, DATA: PROD}

# Failures a caller can meet on any key, with the messages KMS writes.
BACKGROUND_ERRORS = (
    ("AccessDeniedException", "User: {principal} is not authorized to perform: kms:{operation} on resource: {key} "
     "because no identity-based policy allows the kms:{operation} action", 40),
    ("ThrottlingException", "Rate exceeded", 18),
    ("InvalidCiphertextException", None, 14),
    ("IncorrectKeyException", "The key ID in the request does not identify a CMK that can perform this operation.", 12),
    ("NotFoundException", "Alias arn:aws:kms:{region}:{account}:alias/{alias}-old is not found.", 8),
)  # fmt: skip


@dataclass(frozen=True)
class Spike:
    """A burst of traffic on one key: a backfill or a reprocessing job."""

    alias: str
    days_ago: int
    hour: int  # UTC
    hours: int
    factor: float
    throttled: float  # share of the burst's calls that KMS throttles


# capacity: calls per minute of a cache flush on prod's eu-west-1 sessions table, with the share
# KMS throttles. Near the symmetric quota the demo sets there (DEMO_QUOTAS, which scripts/run.sh
# passes as KMSDASH_KMS_QUOTAS; AWS's default in eu-west-1 is 100,000 requests/s): 9.5/s of 10.
DEMO_QUOTAS = {"111122223333:eu-west-1:symmetric": 10}
CAPACITY_BURST = ((420, 0.0), (480, 0.0), (530, 0.02), (570, 0.08), (560, 0.06), (500, 0.01))

SPIKES = (
    Spike("prod-orders-s3", days_ago=9, hour=14, hours=2, factor=6, throttled=0.12),
    Spike("data-lake-s3", days_ago=16, hour=20, hours=3, factor=4, throttled=0.03),
    # A replay of the orders stream: twenty times the key's usual hour, the volume-spike alert.
    Spike("prod-orders-dynamodb", days_ago=2, hour=13, hours=1, factor=20, throttled=0.0),
)


@dataclass(frozen=True)
class DemoKey:
    """A key of the world once it exists: its spec and the ARN the emulator gave it."""

    spec: KeySpec
    arn: str

    @property
    def key_id(self) -> str:
        return self.arn.rsplit("/", 1)[1]


def placeholder_keys(seed: int = 0) -> list[DemoKey]:
    """The world's keys with made-up ARNs, for generating activity without an emulator."""
    rng = random.Random(seed)
    return [
        DemoKey(spec, f"arn:aws:kms:{spec.region}:{spec.account}:key/{uuid.UUID(int=rng.getrandbits(128), version=4)}")
        for spec in KEYS
    ]


@dataclass(frozen=True)
class Timeline:
    """The moments the stories happen, relative to the end of the generated month."""

    start: datetime
    end: datetime

    def at(self, days_ago: float, hour: int = 0, minute: int = 0) -> datetime:
        day = (self.end - timedelta(days=days_ago)).replace(hour=hour, minute=minute, second=0, microsecond=0)
        return max(self.start, min(day, self.end - timedelta(minutes=1)))

    @property
    def legacy_disabled(self) -> datetime:
        return self.at(6, 15, 42)

    @property
    def migration_scheduled(self) -> datetime:
        return self.at(3, 10, 5)

    @property
    def root_policy_change(self) -> datetime:
        return self.at(12, 2, 14)

    def spike(self, spike: Spike) -> tuple[datetime, datetime]:
        begin = self.at(spike.days_ago, spike.hour)
        return begin, begin + timedelta(hours=spike.hours)

    @property
    def denied_night(self) -> tuple[datetime, datetime]:
        begin = self.at(1, 1, 30)
        return begin, begin + timedelta(hours=3)


class _Generator:
    def __init__(self, keys: Sequence[DemoKey], timeline: Timeline, seed: int, scale: float = 1.0) -> None:
        self.keys = list(keys)
        # The stories' volumes follow the traffic's, so a smaller world keeps the same proportions.
        self.scale = scale
        self.by_alias = {key.spec.alias: key for key in self.keys}
        self.timeline = timeline
        self.rng = random.Random(seed)
        self.total_share = sum(key.spec.share for key in self.keys)
        self.error_codes = [code for code, _, _ in BACKGROUND_ERRORS]
        self.error_weights = [weight for _, _, weight in BACKGROUND_ERRORS]
        self.error_messages = {code: message for code, message, _ in BACKGROUND_ERRORS}

    # --- ids -----------------------------------------------------------------------------------
    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def hexid(self, length: int) -> str:
        return f"{self.rng.getrandbits(length * 4):0{length}x}"

    def ip(self) -> str:
        return f"10.{self.rng.randrange(0, 32)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"

    # --- one use of a key ----------------------------------------------------------------------
    def use(self, key: DemoKey, when: datetime) -> dict[str, Any]:
        """Keyword arguments for kms_record: one data-plane call in the key's workload."""
        spec, rng = key.spec, self.rng
        account, region = spec.account, spec.region
        role = rng.choice(APP_ROLES[account])
        agent = rng.choice(AGENTS)
        ip = self.ip()
        context: dict[str, Any] | None = None
        operation = "Decrypt" if rng.random() < 0.6 else "GenerateDataKey"
        identity = identity_role(account, role, f"{role}-{self.hexid(8)}")
        if spec.workload == "s3":
            service = "s3.amazonaws.com"
            identity = identity_role(account, role, f"i-0{self.hexid(16)}", invoked_by=service)
            day = when.strftime("%Y/%m/%d")
            context = {"aws:s3:arn": f"arn:aws:s3:::{spec.resource}/{day}/{self.hexid(12)}.json.gz"}
            ip = agent = service
        elif spec.workload == "s3-bucket-key":
            service = "s3.amazonaws.com"
            identity = identity_role(account, role, f"i-0{self.hexid(16)}", invoked_by=service)
            context = {"aws:s3:arn": f"arn:aws:s3:::{spec.resource}"}
            ip = agent = service
        elif spec.workload == "dynamodb":
            service = "dynamodb.amazonaws.com"
            context = {"aws:dynamodb:tableName": spec.resource, "aws:dynamodb:subscriberId": account}
            if rng.random() < 0.55:
                # DynamoDB refreshing the table key on its own: an AWSService caller.
                identity = identity_service(service)
                operation = "Decrypt"
            else:
                identity = identity_role(account, role, f"{role}-{self.hexid(8)}", invoked_by=service)
            ip = agent = service
        elif spec.workload == "secretsmanager":
            service = "secretsmanager.amazonaws.com"
            identity = identity_role(account, role, f"{role}-{self.hexid(8)}", invoked_by=service)
            operation = "Decrypt" if rng.random() < 0.93 else "GenerateDataKey"
            context = {
                "SecretARN": f"arn:aws:secretsmanager:{region}:{account}:secret:{spec.resource}-{self.hexid(6)[:6]}",
                "SecretVersionId": self.uid(),
            }
            ip = agent = service
        elif spec.workload == "ebs":
            service = "ec2.amazonaws.com"
            identity = identity_role(account, "ec2-autoscaling", f"{spec.resource}-{self.hexid(6)}", invoked_by=service)
            operation = rng.choices(("Decrypt", "GenerateDataKeyWithoutPlaintext", "CreateGrant"), (70, 28, 2))[0]
            context = {"aws:ebs:id": f"vol-0{self.hexid(16)}"}
            ip = agent = service
        elif spec.workload == "lambda":
            service = "lambda.amazonaws.com"
            function = f"arn:aws:lambda:{region}:{account}:function:{spec.resource}"
            identity = identity_role(account, f"{spec.resource}-role", spec.resource, invoked_by=service)
            operation = "Decrypt"
            context = {"aws:lambda:FunctionArn": function}
            ip = agent = service
        elif spec.workload == "signing":
            identity = identity_role(account, spec.resource, f"build-{rng.randrange(1000, 9999)}")
            operation = rng.choices(("Sign", "Verify", "GetPublicKey"), (70, 25, 5))[0]
            if operation != "GetPublicKey":
                # The algorithm names the key's spec, and so the request quota the call counts against.
                extra = {"keyId": key.arn, "signingAlgorithm": "RSASSA_PKCS1_V1_5_SHA_256", "messageType": "DIGEST"}
                return {
                    "event_name": operation,
                    "identity": identity,
                    "encryption_context": None,
                    "source_ip": ip,
                    "user_agent": agent,
                    "request_parameters": extra,
                }
        else:  # app: direct SDK calls with the company's context convention
            operation = rng.choices(("Decrypt", "Encrypt", "GenerateDataKey"), (55, 25, 20))[0]
            context = self.app_context(spec.resource)
        return {
            "event_name": operation,
            "identity": identity,
            "encryption_context": context,
            "source_ip": ip,
            "user_agent": agent,
        }

    def app_context(self, department: str) -> dict[str, str]:
        """The Department/DataClassification convention; about 4% of callers break it."""
        roll = self.rng.random()
        if roll < 0.015:
            return {"Department": department}  # no classification
        if roll < 0.03:
            return {"department": department.lower(), "DataClassification": "Confidential"}  # wrong key case
        if roll < 0.04:
            return {"Department": department, "DataClassification": "TopSecret"}  # not an allowed value
        return {"Department": department, "DataClassification": self.rng.choice(("Confidential", "Internal"))}

    def record(
        self,
        key: DemoKey | None,
        when: datetime,
        *,
        recipient: str | None = None,
        error: tuple[str, str | None] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        spec = key.spec if key else None
        account = recipient or (spec.account if spec else PROD)
        region = kwargs.pop("region", spec.region if spec else "us-east-1")
        return kms_record(
            event_time=when,
            key_arn=kwargs.pop("key_arn", key.arn if key else None),
            region=region,
            recipient_account_id=account,
            error_code=error[0] if error else None,
            error_message=error[1] if error else None,
            event_id=self.uid(),
            **kwargs,
        )

    def background_error(self, key: DemoKey, call: dict[str, Any]) -> tuple[str, str | None]:
        code = self.rng.choices(self.error_codes, self.error_weights)[0]
        message = self.error_messages[code]
        if message:
            identity = call["identity"]
            principal = identity.get("arn") or identity.get("invokedBy") or identity.get("accountId", "")
            message = message.format(
                principal=principal,
                operation=call["event_name"],
                key=key.arn,
                region=key.spec.region,
                account=key.spec.account,
                alias=key.spec.alias,
            )
        return code, message

    # --- the month -----------------------------------------------------------------------------
    def hourly_volume(self, key: DemoKey, slot: datetime, events_per_day: float) -> float:
        local = slot + timedelta(hours=REGION_UTC_OFFSET[key.spec.region])
        factor = HOUR_PROFILE[local.hour] / (sum(HOUR_PROFILE) / 24)
        if local.weekday() >= 5:
            factor *= WEEKEND_FACTOR
        return events_per_day / 24 * key.spec.share / self.total_share * factor

    def count(self, expected: float) -> int:
        jittered = expected * self.rng.uniform(0.8, 1.2)
        whole = int(jittered)
        return whole + (1 if self.rng.random() < jittered - whole else 0)

    def traffic(self, events_per_day: float, *, with_stories: bool = True) -> Iterator[dict[str, Any]]:
        timeline, rng = self.timeline, self.rng
        slot = timeline.start.replace(minute=0, second=0, microsecond=0)
        spikes = {spike.alias: (spike, *timeline.spike(spike)) for spike in SPIKES} if with_stories else {}
        while slot < timeline.end:
            for key in self.keys:
                expected = self.hourly_volume(key, slot, events_per_day)
                throttled = 0.0
                if key.spec.alias in spikes:
                    spike, begin, end = spikes[key.spec.alias]
                    if begin <= slot < end:
                        expected *= spike.factor
                        throttled = spike.throttled
                for _ in range(self.count(expected)):
                    when = slot + timedelta(seconds=rng.randrange(3600))
                    if not (timeline.start <= when < timeline.end):
                        continue
                    yield from self.one_use(key, when, throttled=throttled)
            slot += timedelta(hours=1)

    def one_use(self, key: DemoKey, when: datetime, *, throttled: float = 0.0) -> Iterator[dict[str, Any]]:
        spec, rng, timeline = key.spec, self.rng, self.timeline
        if spec.state == "Disabled" and when >= timeline.legacy_disabled:
            return  # callers moved away; only the nightly job keeps failing (see stories)
        if spec.state == "PendingDeletion" and when >= timeline.migration_scheduled:
            return
        call = self.use(key, when)
        error: tuple[str, str | None] | None = None
        if throttled and rng.random() < throttled:
            error = ("ThrottlingException", "Rate exceeded")
        elif rng.random() < BACKGROUND_FAILURE_RATE:
            error = self.background_error(key, call)
        if spec.cross_account_role and rng.random() < 0.2:
            yield from self.cross_account(key, when, call, error)
            return
        yield self.record(key, when, error=error, **call)

    def cross_account(
        self, key: DemoKey, when: datetime, call: dict[str, Any], error: tuple[str, str | None] | None
    ) -> Iterator[dict[str, Any]]:
        """A caller in the other account: each side's trail logs its own copy, linked by sharedEventID."""
        spec = key.spec
        caller = OTHER_ACCOUNT[spec.account]
        role = spec.cross_account_role
        shared = self.uid()
        operation = "Decrypt" if self.rng.random() < 0.8 else "GenerateDataKey"
        context = call["encryption_context"]
        common = {
            "event_name": operation,
            "encryption_context": context,
            "source_ip": self.ip(),
            "user_agent": self.rng.choice(AGENTS),
            "shared_event_id": shared,
            "error": error,
        }
        yield self.record(key, when, identity=identity_account(caller), **common)
        yield self.record(
            key, when, recipient=caller, identity=identity_role(caller, role, f"{role}-{self.hexid(8)}"), **common
        )

    # --- stories -------------------------------------------------------------------------------
    def stories(self) -> Iterator[dict[str, Any]]:
        timeline, rng = self.timeline, self.rng
        keys = self.by_alias
        # Key lifecycle management by administrators over the month.
        for key in self.keys:
            spec = key.spec
            if not spec.share:
                continue  # the unused key: nobody touches it
            admin = identity_user(spec.account, ADMIN_USERS[spec.account][0])
            if spec.rotation:
                yield self.record(
                    key,
                    timeline.at(27, 10, rng.randrange(60)),
                    identity=admin,
                    event_name="EnableKeyRotation",
                    user_agent=CONSOLE_AGENT,
                    source_ip="192.0.2.40",
                    request_parameters={"keyId": key.key_id},
                )
            # Inventory scripts and engineers look keys up now and then.
            for days_ago in range(0, 30, 3):
                yield self.record(
                    key,
                    timeline.at(days_ago, 9 + rng.randrange(8), rng.randrange(60)),
                    identity=identity_user(spec.account, ADMIN_USERS[spec.account][1]),
                    event_name="DescribeKey",
                    user_agent=CLI_AGENT,
                    source_ip="192.0.2.41",
                )
            if spec.workload == "ebs":
                for days_ago in range(1, 30, 4):
                    yield self.record(
                        key,
                        timeline.at(days_ago, 11, rng.randrange(60)),
                        identity=identity_role(
                            spec.account, "ec2-autoscaling", "scale-in", invoked_by="ec2.amazonaws.com"
                        ),
                        event_name="RetireGrant",
                        source_ip="ec2.amazonaws.com",
                        user_agent="ec2.amazonaws.com",
                    )

        signing = keys.get("data-signing")
        if signing:
            created = timeline.at(20, 16, 3)
            platform = identity_role(DATA, "platform-admin", "dave.platform")
            yield self.record(
                None,
                created,
                recipient=DATA,
                identity=platform,
                event_name="CreateKey",
                region=signing.spec.region,
                key_arn=None,
                user_agent=CLI_AGENT,
                request_parameters={
                    "keySpec": "RSA_2048",
                    "keyUsage": "SIGN_VERIFY",
                    "description": signing.spec.description,
                },
                response_elements={
                    "keyMetadata": {
                        "keyId": signing.key_id,
                        "arn": signing.arn,
                        "keyState": "Enabled",
                        "keyManager": "CUSTOMER",
                    }
                },
            )
            yield self.record(
                signing,
                created + timedelta(seconds=20),
                identity=platform,
                event_name="CreateAlias",
                user_agent=CLI_AGENT,
                request_parameters={"aliasName": signing.spec.alias_name, "targetKeyId": signing.key_id},
            )
            yield self.record(
                signing,
                created + timedelta(minutes=2),
                identity=platform,
                event_name="PutKeyPolicy",
                user_agent=CLI_AGENT,
                request_parameters={"keyId": signing.key_id, "policyName": "default"},
            )

        payments = keys.get("prod-payments-app")
        if payments:
            # The root user edits a key policy in the middle of the night: a finding.
            yield self.record(
                payments,
                timeline.root_policy_change,
                identity=identity_root(PROD),
                event_name="PutKeyPolicy",
                source_ip="198.51.100.77",
                user_agent=CONSOLE_AGENT,
                request_parameters={
                    "keyId": payments.key_id,
                    "policyName": "default",
                    "bypassPolicyLockoutSafetyCheck": False,
                },
            )

        # Annual rotation done by KMS itself: service events with no principal type.
        for key in self.keys:
            if key.spec.rotation and key.spec.state == "Enabled" and key.spec.share and rng.random() < 0.35:
                record = self.record(
                    key,
                    timeline.at(rng.randrange(1, 29), 4, rng.randrange(60)),
                    identity={"accountId": key.spec.account, "invokedBy": "AWS Internal"},
                    event_name="RotateKey",
                    source_ip="AWS Internal",
                    user_agent="AWS Internal",
                    request_parameters=None,
                )
                record["eventType"] = "AwsServiceEvent"
                yield record

        legacy = keys.get("prod-legacy-reports")
        if legacy:
            admin = identity_user(PROD, ADMIN_USERS[PROD][0])
            yield self.record(
                legacy,
                timeline.legacy_disabled,
                identity=admin,
                event_name="DisableKey",
                user_agent=CONSOLE_AGENT,
                source_ip="192.0.2.40",
                request_parameters={"keyId": legacy.key_id},
            )
            # The nightly report job was never moved to the new key.
            night = timeline.legacy_disabled.replace(hour=2, minute=10) + timedelta(days=1)
            while night < timeline.end:
                for attempt in range(max(1, round(rng.randrange(25, 40) * self.scale))):
                    yield self.record(
                        legacy,
                        night + timedelta(seconds=attempt * 7),
                        identity=identity_role(PROD, "report-builder", "nightly-report"),
                        event_name="Decrypt",
                        user_agent=AGENTS[1],
                        source_ip="10.4.18.22",
                        encryption_context={"Department": "Finance", "DataClassification": "Confidential"},
                        error=("DisabledException", f"{legacy.arn} is disabled."),
                    )
                night += timedelta(days=1)

        migration = keys.get("data-old-migration")
        if migration:
            when = timeline.migration_scheduled
            deletion = when + timedelta(days=30)
            yield self.record(
                migration,
                when,
                identity=identity_role(DATA, "platform-admin", "dave.platform"),
                event_name="ScheduleKeyDeletion",
                user_agent=CLI_AGENT,
                source_ip="192.0.2.44",
                request_parameters={"keyId": migration.key_id, "pendingWindowInDays": 30},
                response_elements={
                    "keyId": migration.arn,
                    "keyState": "PendingDeletion",
                    "deletionDate": deletion.strftime("%b %d, %Y, %I:%M:%S %p"),
                },
            )
            straggler = when + timedelta(hours=5)
            while straggler < timeline.end:
                yield self.record(
                    migration,
                    straggler,
                    identity=identity_role(DATA, "ingest-worker", "backfill"),
                    event_name="Decrypt",
                    user_agent=AGENTS[2],
                    source_ip=self.ip(),
                    encryption_context={"Department": "Migration", "DataClassification": "Internal"},
                    error=("KMSInvalidStateException", f"{migration.arn} is pending deletion."),
                )
                straggler += timedelta(minutes=rng.randrange(20, 90) / self.scale)

        lake = keys.get("data-lake-s3")
        if lake:
            begin, end = timeline.denied_night
            role = identity_role(DATA, "ml-training", "training-job-42")
            when = begin
            while when < min(end, timeline.end):
                yield self.record(
                    lake,
                    when,
                    identity=role,
                    event_name="Decrypt",
                    user_agent=AGENTS[1],
                    source_ip="10.9.3.17",
                    encryption_context={"aws:s3:arn": f"arn:aws:s3:::data-lake-raw/features/{self.hexid(10)}.parquet"},
                    error=(
                        "AccessDeniedException",
                        f"User: {role['arn']} is not authorized to perform: kms:Decrypt on "
                        f"resource: {lake.arn} because no resource-based policy allows the "
                        "kms:Decrypt action",
                    ),
                )
                when += timedelta(seconds=rng.randrange(20, 60) / self.scale)

        # Grants for the EBS keys and a key policy change by an engineer in office hours.
        for alias in ("prod-ebs", "data-eu-pipeline"):
            changed = keys.get(alias)
            if changed:
                yield self.record(
                    changed,
                    timeline.at(15, 13, 20),
                    identity=identity_user(changed.spec.account, ADMIN_USERS[changed.spec.account][1]),
                    event_name="PutKeyPolicy",
                    user_agent=CLI_AGENT,
                    source_ip="192.0.2.41",
                    request_parameters={"keyId": changed.key_id, "policyName": "default"},
                )

        yield from self.alert_stories()

    def alert_stories(self) -> Iterator[dict[str, Any]]:
        """Incidents of the last two days that the alerts must catch, beside look-alikes they must not."""
        timeline, keys = self.timeline, self.by_alias
        warehouse = keys.get("data-warehouse")
        if warehouse:
            # key-exposed: an engineer opens the key policy to everyone, and restores it 25 minutes later.
            platform = identity_role(DATA, "platform-admin", "dave.platform")
            root = {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{DATA}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
            public = {
                "Sid": "TemporaryDebugAccess",
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["kms:Decrypt", "kms:DescribeKey"],
                "Resource": "*",
            }
            opened = timeline.at(1, 14, 5)
            for when, statements in ((opened, [root, public]), (opened + timedelta(minutes=25), [root])):
                yield self.record(
                    warehouse,
                    when,
                    identity=platform,
                    event_name="PutKeyPolicy",
                    user_agent=CLI_AGENT,
                    source_ip="192.0.2.44",
                    request_parameters={
                        "keyId": warehouse.key_id,
                        "policyName": "default",
                        "policy": json.dumps({"Version": "2012-10-17", "Statement": statements}),
                    },
                )
        eu_lake = keys.get("data-eu-lake-s3")
        if eu_lake:
            # A look-alike: everyone in the organisation, pinned by aws:PrincipalOrgID, is not exposed.
            org = {
                "Sid": "OrgRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-demo1234ab"}},
            }
            yield self.record(
                eu_lake,
                timeline.at(2, 11, 30),
                identity=identity_user(DATA, ADMIN_USERS[DATA][1]),
                event_name="PutKeyPolicy",
                user_agent=CLI_AGENT,
                source_ip="192.0.2.44",
                request_parameters={
                    "keyId": eu_lake.key_id,
                    "policyName": "default",
                    "policy": json.dumps({"Version": "2012-10-17", "Statement": [org]}),
                },
            )
        sessions = keys.get("prod-eu-sessions")
        if sessions:
            # capacity: a cache flush a day ago makes the sessions table decrypt everything again.
            start = timeline.at(1, 16, 20)
            for minute, (per_minute, throttled) in enumerate(CAPACITY_BURST):
                calls = max(1, round(per_minute * self.scale))
                for n in range(calls):
                    when = start + timedelta(minutes=minute, seconds=60 * n // calls)
                    error = ("ThrottlingException", "Rate exceeded") if self.rng.random() < throttled else None
                    yield self.record(sessions, when, error=error, **self.use(sessions, when))
        orders = keys.get("prod-orders-dynamodb")
        if orders:
            # after-hours-unusual: the SRE who looks the key up in office hours decrypts at 03:40 UTC.
            sre = identity_user(PROD, ADMIN_USERS[PROD][1])
            night = timeline.at(0.6, 3, 40)
            for n in range(12):
                yield self.record(
                    orders,
                    night + timedelta(seconds=23 * n),
                    identity=sre,
                    event_name="Decrypt",
                    user_agent=CLI_AGENT,
                    source_ip="203.0.113.99",
                    encryption_context={"aws:dynamodb:tableName": "Orders", "aws:dynamodb:subscriberId": PROD},
                )
            # failure-burst: a script of the same SRE retries a denied call for most of an hour.
            burst = timeline.at(0.4, 9, 2)
            for n in range(max(30, round(150 * self.scale))):
                yield self.record(
                    orders,
                    burst + timedelta(seconds=17 * n),
                    identity=sre,
                    event_name="ReEncrypt",
                    user_agent=CLI_AGENT,
                    source_ip="203.0.113.99",
                    error=(
                        "AccessDeniedException",
                        f"User: {sre['arn']} is not authorized to perform: kms:ReEncryptFrom",
                    ),
                )
            # new-principal: a role of an account kmsdash does not watch calls the key.
            stranger = identity_role("777788889999", "vendor-sync", "sync-7")
            for n in range(3):
                yield self.record(
                    orders,
                    timeline.at(0.5, 10, 12) + timedelta(minutes=n),
                    recipient=PROD,
                    identity=stranger,
                    event_name="Decrypt",
                    user_agent=AGENTS[0],
                    source_ip="198.51.100.200",
                    error=("AccessDeniedException", "not authorized") if n == 2 else None,
                )


def generate_activity(
    keys: Sequence[DemoKey],
    *,
    end: datetime,
    days: int = 30,
    events_per_day: float = DEFAULT_EVENTS_PER_DAY,
    seed: int = 2026,
    start: datetime | None = None,
    stories: bool = True,
) -> list[dict[str, Any]]:
    """Every CloudTrail record of the demo month for `keys`, oldest first.

    `events_per_day` is the average of the ordinary traffic; the stories add a few hundred events.
    Records carry their recipient account: a cross-account call yields two records.
    With `start` (instead of `days`) and stories=False: the ordinary traffic of any window, for
    keeping a running demo alive minute by minute.
    """
    end = _utc(end)
    timeline = Timeline(start=_utc(start) if start else end - timedelta(days=days), end=end)
    generator = _Generator(keys, timeline, seed, scale=events_per_day / DEFAULT_EVENTS_PER_DAY)
    records = list(generator.traffic(events_per_day, with_stories=stories))
    if stories:
        records.extend(r for r in generator.stories() if timeline.start <= _time(r) < timeline.end)
    records.sort(key=lambda record: (record["eventTime"], record["eventID"]))
    return records


def _utc(when: datetime) -> datetime:
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def _time(record: dict[str, Any]) -> datetime:
    return parse_utc(record["eventTime"])
