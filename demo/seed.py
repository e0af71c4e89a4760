"""Push the demo world into the AWS emulator, the way AWS would hold it.

Keys, aliases, policies, grants, tags and rotation go into moto's KMS under each account (reached
with AssumeRole, like kmsdash itself reaches them); a month of CloudTrail log files goes into each
account's trail bucket with the real object layout; the last two days' management events and
failures go to the LookupEvents add-on; Cost Explorer rows derived from the same activity go to the
Cost Explorer add-on. kmsdash then ingests all of it over HTTP through its ordinary sources.

This module only ever talks to the endpoint it is given: it refuses anything that does not answer
as the kmsdash emulator, so it cannot write into a real AWS account.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import random
import string
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from django.conf import settings
from django.core.management import call_command

from costs.demo import demo_dataset
from inventory.models import EncryptionContextRule
from kmsdash.dates import parse_day, parse_utc

from .activity import ACCOUNTS, KEYS, OTHER_ACCOUNT, PROD, REGIONS, DemoKey, KeySpec, generate_activity
from .iam import READER_ROLE, seed_iam
from .lifecycle import seed_lifecycle

log = logging.getLogger(__name__)

EXTERNAL_ID = "kmsdash-demo"
TRAIL_NAME = "management-events"
LOOKUP_DAYS = 2
TRAIL_REGION = "us-east-1"
FOREIGN_ACCOUNT = "999988887777"  # a partner's account, not one kmsdash watches


def reader_role_arn(account: str) -> str:
    return f"arn:aws:iam::{account}:role/{READER_ROLE}"


def trail_bucket(account: str) -> str:
    return f"kmsdash-demo-cloudtrail-{account}"


class NotTheEmulator(RuntimeError):
    """The endpoint is not the kmsdash emulator: seeding it could write into real AWS."""


@dataclass
class SeedResult:
    keys: list[DemoKey] = field(default_factory=list)
    records: int = 0
    log_files: int = 0
    lookup_events: int = 0
    cost_rows: int = 0
    principals: int = 0
    buckets: dict[str, str] = field(default_factory=dict)
    lifecycle: dict[str, str] = field(default_factory=dict)  # alias -> ARN of the lifecycle stories' keys
    seconds: dict[str, float] = field(default_factory=dict)


class Emulator:
    """boto3 sessions per account and the control API, all bound to one emulator URL."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.config = Config(retries={"mode": "standard", "total_max_attempts": 5}, max_pool_connections=16)
        self._base = boto3.Session(aws_access_key_id="demo", aws_secret_access_key="demo", region_name=TRAIL_REGION)
        self._sessions: dict[str, boto3.Session] = {}
        self._clients: dict[tuple[str, str, str], Any] = {}

    def check(self) -> None:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/_kmsdash/ping", timeout=5) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            # The emulator answers unknown control routes with its own JSON 404.
            if exc.code == 404 and "no control route" in exc.read().decode(errors="replace"):
                return
            raise NotTheEmulator(f"{self.endpoint} answered HTTP {exc.code}, not as the kmsdash emulator") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise NotTheEmulator(f"cannot reach the emulator at {self.endpoint}: {exc}") from exc

    def session(self, account: str) -> boto3.Session:
        if account not in self._sessions:
            sts = self._base.client("sts", endpoint_url=self.endpoint, config=self.config)
            credentials = sts.assume_role(
                RoleArn=reader_role_arn(account), RoleSessionName="kmsdash-demo-seed", ExternalId=EXTERNAL_ID
            )["Credentials"]
            self._sessions[account] = boto3.Session(
                aws_access_key_id=credentials["AccessKeyId"],
                aws_secret_access_key=credentials["SecretAccessKey"],
                aws_session_token=credentials["SessionToken"],
            )
        return self._sessions[account]

    def client(self, service: str, account: str, region: str = TRAIL_REGION) -> Any:
        if (service, account, region) not in self._clients:
            self._clients[(service, account, region)] = self.session(account).client(
                service, region_name=region, endpoint_url=self.endpoint, config=self.config
            )
        return self._clients[(service, account, region)]

    def control(self, path: str, payload: Any) -> Any:
        request = urllib.request.Request(
            f"{self.endpoint}/_kmsdash/{path}",
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())


# --- KMS ---------------------------------------------------------------------------------------
def key_policy(spec: KeySpec) -> str:
    account = spec.account
    statements: list[dict[str, Any]] = [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ]
    if spec.cross_account_role:
        other = OTHER_ACCOUNT[account]
        statements.append(
            {
                "Sid": "Allow use by the other account",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{other}:role/{spec.cross_account_role}"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*", "kms:DescribeKey"],
                "Resource": "*",
            }
        )
    statements.extend(RISKY_STATEMENTS.get(spec.alias, []))
    return json.dumps({"Version": "2012-10-17", "Id": "key-default-1", "Statement": statements})


# Policy statements someone added over time, each one a finding.
RISKY_STATEMENTS: dict[str, list[dict[str, Any]]] = {
    # A shortcut: anyone at all may decrypt.
    "data-eu-pipeline": [
        {
            "Sid": "Temporary pipeline access",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": "kms:Decrypt",
            "Resource": "*",
        }
    ],
    # Developers hold every KMS action on a production key.
    "prod-eu-lambda": [
        {
            "Sid": "Developers",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{PROD}:role/Developer"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
    # An external auditor's account that kmsdash does not watch.
    "prod-invoices-s3": [
        {
            "Sid": "External auditor",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{FOREIGN_ACCOUNT}:root"},
            "Action": ["kms:Decrypt", "kms:DescribeKey"],
            "Resource": "*",
        }
    ],
}
# Grants to an account kmsdash does not watch (a backup vendor).
FOREIGN_GRANTS = {"prod-apac-backup": f"arn:aws:iam::{FOREIGN_ACCOUNT}:role/backup-vendor"}


def create_key(emulator: Emulator, spec: KeySpec) -> DemoKey:
    kms = emulator.client("kms", spec.account, spec.region)
    metadata = kms.create_key(
        Description=spec.description,
        KeySpec=spec.key_spec,
        KeyUsage=spec.key_usage,
        Policy=key_policy(spec),
        Tags=[{"TagKey": name, "TagValue": value} for name, value in spec.tags.items()],
    )["KeyMetadata"]
    key = DemoKey(spec, metadata["Arn"])
    kms.create_alias(AliasName=spec.alias_name, TargetKeyId=key.key_id)
    if spec.rotation:
        kms.enable_key_rotation(KeyId=key.key_id)
    if spec.workload == "ebs":
        for role in ("ec2-autoscaling", "backup-service"):
            kms.create_grant(
                KeyId=key.key_id,
                GranteePrincipal=f"arn:aws:iam::{spec.account}:role/{role}",
                Operations=["Decrypt", "GenerateDataKeyWithoutPlaintext", "CreateGrant"],
                Name=f"{role}-ebs",
            )
    if spec.cross_account_role:
        kms.create_grant(
            KeyId=key.key_id,
            GranteePrincipal=f"arn:aws:iam::{OTHER_ACCOUNT[spec.account]}:role/{spec.cross_account_role}",
            Operations=["Decrypt"],
            Name=f"{spec.cross_account_role}-cross-account",
        )
    if spec.alias in FOREIGN_GRANTS:
        kms.create_grant(
            KeyId=key.key_id,
            GranteePrincipal=FOREIGN_GRANTS[spec.alias],
            Operations=["Decrypt", "GenerateDataKey"],
            Name="backup-vendor",
        )
    if spec.state == "Disabled":
        kms.disable_key(KeyId=key.key_id)
    elif spec.state == "PendingDeletion":
        kms.schedule_key_deletion(KeyId=key.key_id, PendingWindowInDays=30)
    return key


def create_keys(emulator: Emulator, specs: Sequence[KeySpec] = KEYS, *, now: datetime) -> list[DemoKey]:
    keys = [create_key(emulator, spec) for spec in specs]
    for key in keys:
        created = now - timedelta(days=key.spec.created_days_ago)
        emulator.control("kms/key-dates", {"key_arn": key.arn, "creation_date": created.isoformat()})
    return keys


# --- CloudTrail --------------------------------------------------------------------------------
def create_trails(emulator: Emulator, accounts: Iterable[str]) -> dict[str, str]:
    """A multi-region trail per account into its own bucket; the data account also has a trail that
    leaves KMS events out (cheaper, but blind to key use: a finding)."""
    buckets = {}
    for account in accounts:
        bucket = trail_bucket(account)
        emulator.client("s3", account).create_bucket(Bucket=bucket)
        cloudtrail = emulator.client("cloudtrail", account)
        cloudtrail.create_trail(Name=TRAIL_NAME, S3BucketName=bucket, IsMultiRegionTrail=True)
        cloudtrail.put_event_selectors(
            TrailName=TRAIL_NAME,
            EventSelectors=[{"ReadWriteType": "All", "IncludeManagementEvents": True}],
        )
        cloudtrail.start_logging(Name=TRAIL_NAME)
        if account == list(ACCOUNTS)[-1]:
            cloudtrail.create_trail(
                Name="security-lake-export", S3BucketName=bucket, IsMultiRegionTrail=True, S3KeyPrefix="security-lake"
            )
            cloudtrail.put_event_selectors(
                TrailName="security-lake-export",
                EventSelectors=[
                    {
                        "ReadWriteType": "All",
                        "IncludeManagementEvents": True,
                        "ExcludeManagementEventSources": ["kms.amazonaws.com"],
                    }
                ],
            )
        buckets[account] = bucket
    return buckets


def _other_service_record(rng: random.Random, account: str, region: str, when: datetime) -> dict[str, Any]:
    """A non-KMS management event: real trail files mix every service, kmsdash must skip them."""
    source, name = rng.choice(
        (
            ("s3.amazonaws.com", "ListBuckets"),
            ("sts.amazonaws.com", "AssumeRole"),
            ("ec2.amazonaws.com", "DescribeInstances"),
            ("iam.amazonaws.com", "GetRole"),
        )
    )
    return {
        "eventVersion": "1.11",
        "userIdentity": {
            "type": "AssumedRole",
            "accountId": account,
            "arn": f"arn:aws:sts::{account}:assumed-role/ops/automation",
        },
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": "10.0.0.10",
        "userAgent": "aws-cli/2.15.40",
        "requestParameters": None,
        "responseElements": None,
        "eventID": f"{rng.getrandbits(128):032x}",
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
        "eventCategory": "Management",
    }


def log_files(
    records: Iterable[dict[str, Any]], *, now: datetime, file_minutes: int = 120, seed: int = 0
) -> list[tuple[str, str, bytes]]:
    """(account, S3 key, gzip body) of the CloudTrail log files holding `records`.

    Files are cut per (recipient account, region, `file_minutes` slot) and named by their delivery
    time, a few minutes after the slot ends (never later than `now`), as CloudTrail does:
    AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<16>.json.gz
    """
    rng = random.Random(seed)
    slots: dict[tuple[str, str, datetime], list[dict[str, Any]]] = defaultdict(list)
    period = file_minutes * 60
    for record in records:
        when = parse_utc(record["eventTime"])
        slot = datetime.fromtimestamp(int(when.timestamp()) // period * period, UTC)
        slots[(record["recipientAccountId"], record["awsRegion"], slot)].append(record)
    files = []
    alphabet = string.ascii_letters + string.digits
    for (account, region, slot), batch in sorted(slots.items()):
        delivered = min(slot + timedelta(seconds=period + rng.randrange(60, 600)), now)
        for _ in range(rng.randrange(0, 3)):
            batch.insert(rng.randrange(len(batch) + 1), _other_service_record(rng, account, region, slot))
        unique = "".join(rng.choices(alphabet, k=16))
        key = (
            f"AWSLogs/{account}/CloudTrail/{region}/{delivered:%Y/%m/%d}/"
            f"{account}_CloudTrail_{region}_{delivered:%Y%m%dT%H%MZ}_{unique}.json.gz"
        )
        body = gzip.compress(json.dumps({"Records": batch}, separators=(",", ":")).encode(), compresslevel=6)
        files.append((account, key, body))
    return files


def digest_files(accounts: Iterable[str], *, start: datetime, now: datetime) -> list[tuple[str, str, bytes]]:
    """One digest file a day per account: same bucket, CloudTrail-Digest prefix, not events."""
    files = []
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < now:
        delivered = day + timedelta(hours=23, minutes=30)
        if delivered > now:
            break
        for account in accounts:
            key = (
                f"AWSLogs/{account}/CloudTrail-Digest/{TRAIL_REGION}/{delivered:%Y/%m/%d}/"
                f"{account}_CloudTrail-Digest_{TRAIL_REGION}_{TRAIL_NAME}_{TRAIL_REGION}_{delivered:%Y%m%dT%H%M%SZ}"
                ".json.gz"
            )
            body = gzip.compress(
                json.dumps(
                    {"awsAccountId": account, "digestStartTime": f"{day:%Y-%m-%dT%H:%M:%SZ}", "logFiles": []}
                ).encode()
            )
            files.append((account, key, body))
        day += timedelta(days=1)
    return files


def upload(emulator: Emulator, buckets: dict[str, str], files: Sequence[tuple[str, str, bytes]]) -> int:
    clients = {account: emulator.client("s3", account) for account in buckets}

    def put(item: tuple[str, str, bytes]) -> None:
        account, key, body = item
        clients[account].put_object(
            Bucket=buckets[account], Key=key, Body=body, ContentType="application/json", ContentEncoding="gzip"
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, files))
    return len(files)


def lookup_records(records: Iterable[dict[str, Any]], *, now: datetime, days: int = LOOKUP_DAYS) -> list[dict]:
    """What LookupEvents should serve: the last `days` of key management events and of failures.

    (LookupEvents serves every management event, but at 2 requests/s; the data-plane bulk of the
    month reaches kmsdash through the S3 log files, which the demo's LookupEvents need not repeat.)
    """
    since = (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [r for r in records if r["eventTime"] >= since and (not r.get("readOnly") or r.get("errorCode"))]


def push_lookup_events(emulator: Emulator, records: Sequence[dict[str, Any]], *, chunk: int = 2000) -> int:
    for start in range(0, len(records), chunk):
        emulator.control("cloudtrail/events", {"records": list(records[start : start + chunk])})
    return len(records)


# --- Cost Explorer -------------------------------------------------------------------------------
def cost_activity(keys: Sequence[DemoKey], records: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, int]]:
    """Billable KMS requests per (day, key owner, region), with the keys billed there.

    Each request is counted once, in the key owner's copy (the caller's copy of a cross-account call
    is the same request). KMS's own service events (rotation) are not requests. Keys pending
    deletion are not billed.
    """
    owner_of = {key.arn: key.spec.account for key in keys}
    asymmetric = {key.arn for key in keys if key.spec.key_spec != "SYMMETRIC_DEFAULT"}
    billed: defaultdict[tuple[str, str], int] = defaultdict(int)
    for key in keys:
        if key.spec.state != "PendingDeletion":
            billed[(key.spec.account, key.spec.region)] += 1
    activity: dict[tuple, dict[str, int]] = {}
    for record in records:
        resources = record.get("resources") or []
        arn = resources[0]["ARN"] if resources else ""
        account = record["recipientAccountId"]
        if owner_of.get(arn) != account or record.get("eventType") != "AwsApiCall":
            continue
        region = record["awsRegion"]
        entry = activity.setdefault(
            (record["eventTime"][:10], account, region),
            {"requests": 0, "asymmetric_requests": 0, "keys": billed[(account, region)]},
        )
        entry["asymmetric_requests" if arn in asymmetric else "requests"] += 1
    return activity


def backfill_activity(
    activity: dict[tuple, dict[str, int]], *, since: date, growth: float = 0.9
) -> dict[tuple, dict[str, int]]:
    """Extend daily activity back to `since`: each earlier day repeats the first seeded week's same
    weekday, a little lower (`growth`), so month-over-month comparisons have something to compare."""
    days = sorted({parse_day(day) for day, _, _ in activity})
    first = days[0]
    # The first and last days are partial (the month starts and ends mid-day): copy whole days.
    whole = days[1:-1] or days
    by_weekday = {day.weekday(): day for day in reversed(whole[:7])}
    filled = dict(activity)
    day = since
    while day < first:
        source = by_weekday.get(day.weekday(), whole[(day - since).days % len(whole)])
        for (when, account, region), entry in activity.items():
            if when == source.isoformat():
                filled[(day.isoformat(), account, region)] = {
                    "requests": round(entry["requests"] * growth),
                    "asymmetric_requests": round(entry["asymmetric_requests"] * growth),
                    "keys": entry["keys"],
                }
        day += timedelta(days=1)
    return filled


def push_costs(emulator: Emulator, keys: Sequence[DemoKey], records: Sequence[dict[str, Any]], *, now: datetime) -> int:
    """What Cost Explorer would bill for the month, from the same activity (costs.demo prices it)."""
    activity = cost_activity(keys, records)
    if not activity:
        return 0
    # Cost Explorer remembers further back than the seeded trail: bill the whole previous month.
    first_month = (now.date().replace(day=1) - timedelta(days=1)).replace(day=1)
    activity = backfill_activity(activity, since=first_month)
    rows = demo_dataset(first_month, now.date(), activity, today=now.date())
    emulator.control("ce/dataset", {"rows": rows})
    return len(rows)


# --- A running demo ------------------------------------------------------------------------------
def find_keys(emulator: Emulator, specs: Sequence[KeySpec] = KEYS) -> list[DemoKey]:
    """The world's keys as the emulator holds them, found again by their aliases."""
    keys = []
    for account, region in dict.fromkeys((spec.account, spec.region) for spec in specs):
        kms = emulator.client("kms", account, region)
        targets = {
            alias["AliasName"]: alias.get("TargetKeyId")
            for page in kms.get_paginator("list_aliases").paginate()
            for alias in page["Aliases"]
        }
        for spec in specs:
            if (spec.account, spec.region) == (account, region) and targets.get(spec.alias_name):
                keys.append(DemoKey(spec, f"arn:aws:kms:{region}:{account}:key/{targets[spec.alias_name]}"))
    return keys


def push_live(
    emulator: Emulator, keys: Sequence[DemoKey], *, start: datetime, end: datetime, events_per_day: float = 3000
) -> int:
    """The ordinary traffic of [start, end) delivered as CloudTrail would: a log file per account
    and region, and its management events and failures to LookupEvents."""
    seed = int(start.timestamp())
    records = generate_activity(keys, start=start, end=end, events_per_day=events_per_day, seed=seed, stories=False)
    if not records:
        return 0
    minutes = max(1, int((end - start).total_seconds() // 60))
    files = log_files(records, now=end, file_minutes=minutes, seed=seed)
    upload(emulator, {account: trail_bucket(account) for account in {key.spec.account for key in keys}}, files)
    push_lookup_events(emulator, lookup_records(records, now=end))
    return len(records)


# --- kmsdash's own rows ------------------------------------------------------------------------
def ensure_secrets_key(endpoint: str, alias: str) -> str:
    """The KMS key that seals alert channel secrets (KMSDASH_SECRETS_KMS_KEY), in the emulator's own
    account: the demo's channels are set up like production ones, against the emulator's KMS."""
    kms = boto3.client("kms", endpoint_url=endpoint, region_name=TRAIL_REGION)
    try:
        return kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    except kms.exceptions.NotFoundException:
        pass
    key = kms.create_key(Description="kmsdash demo: alert channel secrets")["KeyMetadata"]
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    return key["Arn"]


def register_sources(buckets: dict[str, str]) -> None:
    """The demo accounts as kmsdash Sources, reached like production ones: AssumeRole + ExternalId."""
    for account, name in ACCOUNTS.items():
        call_command(
            "add_source",
            "--account-id",
            account,
            "--name",
            name,
            "--regions",
            ",".join(REGIONS),
            "--role-arn",
            reader_role_arn(account),
            "--external-id",
            EXTERNAL_ID,
            "--s3-bucket",
            buckets[account],
            stdout=io.StringIO(),
        )


def context_rules(keys: Sequence[DemoKey]) -> int:
    """The company's encryption-context convention on its application keys, for the findings page."""
    count = 0
    for key in keys:
        if key.spec.workload != "app":
            continue
        EncryptionContextRule.objects.update_or_create(
            name=f"{key.spec.alias}: Department and DataClassification",
            defaults={
                "key_arn": key.arn,
                "required_keys": ["Department", "DataClassification"],
                "allowed_values": {"DataClassification": ["Public", "Internal", "Confidential"]},
            },
        )
        count += 1
    return count


# --- All of it ----------------------------------------------------------------------------------
def seed_world(
    endpoint: str,
    *,
    now: datetime | None = None,
    days: int = 30,
    events_per_day: float = 3000,
    seed: int = 2026,
    file_minutes: int = 120,
    specs: Sequence[KeySpec] = KEYS,
) -> SeedResult:
    """Build the demo world in the emulator at `endpoint` (AWS side only; no database writes)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    emulator = Emulator(endpoint)
    emulator.check()
    result = SeedResult()
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        result.seconds[name] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

    accounts = list(dict.fromkeys(spec.account for spec in specs))
    result.keys = create_keys(emulator, specs, now=now)
    result.buckets = buckets = create_trails(emulator, accounts)
    result.principals = sum(seed_iam(lambda account: emulator.client("iam", account), result.keys).values())
    result.lifecycle, lifecycle_records = seed_lifecycle(
        emulator, now=now, window_days=settings.KMSDASH_RETIREMENT_WINDOW_DAYS
    )
    lap("aws resources")

    # Activity ends a few minutes ago: CloudTrail delivers with a delay.
    end = now - timedelta(minutes=3)
    records = generate_activity(result.keys, end=end, days=days, events_per_day=events_per_day, seed=seed)
    records += [r for r in lifecycle_records if r["eventTime"] >= f"{end - timedelta(days=days):%Y-%m-%dT%H:%M:%S}"]
    result.records = len(records)
    lap("activity")

    files = log_files(records, now=now, file_minutes=file_minutes, seed=seed)
    files += digest_files(accounts, start=end - timedelta(days=days), now=now)
    result.log_files = upload(emulator, buckets, files)
    lap("log files")

    result.lookup_events = push_lookup_events(emulator, lookup_records(records, now=now))
    lap("lookup events")

    result.cost_rows = push_costs(emulator, result.keys, records, now=now)
    lap("costs")
    return result
