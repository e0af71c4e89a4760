"""Realistic synthetic CloudTrail KMS records for the demo, the tests and the benchmarks.

The shapes follow the AWS KMS developer guide's CloudTrail examples (eventVersion 1.11, the
AWS::KMS::Key resource, tlsDetails, ...). `generate_records` is deterministic for a seed, so a
benchmark or a property test can regenerate the same data set.
"""

from __future__ import annotations

import gzip
import json
import random
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .cloudtrail import USAGE_OPERATIONS

# Operations that read or use a key (CloudTrail readOnly=true); everything else changes state.
READ_ONLY_EVENT_NAMES = frozenset(USAGE_OPERATIONS) | {
    "GenerateRandom",
    "DescribeKey",
    "GetKeyPolicy",
    "GetKeyRotationStatus",
    "GetPublicKey",
    "GetParametersForImport",
    "ListAliases",
    "ListGrants",
    "ListKeys",
    "ListKeyPolicies",
    "ListResourceTags",
    "ListRetirableGrants",
    "ListKeyRotations",
}


def identity_role(account: str, role: str, session: str, *, invoked_by: str | None = None) -> dict[str, Any]:
    """An AssumedRole userIdentity (a role session), optionally used through an AWS service."""
    identity: dict[str, Any] = {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLE{account[-4:]}:{session}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
        "accountId": account,
        "accessKeyId": "ASIAEXAMPLEKEYID",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": f"AROAEXAMPLE{account[-4:]}",
                "arn": f"arn:aws:iam::{account}:role/{role}",
                "accountId": account,
                "userName": role,
            },
            "webIdFederationData": {},
            "attributes": {"creationDate": "2026-01-01T00:00:00Z", "mfaAuthenticated": "false"},
        },
    }
    if invoked_by:
        identity["invokedBy"] = invoked_by
    return identity


def identity_user(account: str, user: str) -> dict[str, Any]:
    return {
        "type": "IAMUser",
        "principalId": f"AIDAEXAMPLE{account[-4:]}",
        "arn": f"arn:aws:iam::{account}:user/{user}",
        "accountId": account,
        "accessKeyId": "AKIAEXAMPLEKEYID",
        "userName": user,
    }


def identity_root(account: str) -> dict[str, Any]:
    return {
        "type": "Root",
        "principalId": account,
        "arn": f"arn:aws:iam::{account}:root",
        "accountId": account,
        "accessKeyId": "ASIAEXAMPLEROOT",
    }


def identity_service(service: str) -> dict[str, Any]:
    return {"type": "AWSService", "invokedBy": service}


def identity_account(account: str) -> dict[str, Any]:
    """A caller from another account, as the key owner's trail records it."""
    return {"type": "AWSAccount", "principalId": f"AROAEXAMPLE{account[-4:]}:session", "accountId": account}


def _time_text(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def kms_record(
    *,
    event_name: str,
    event_time: datetime,
    key_arn: str | None,
    identity: dict[str, Any],
    region: str,
    recipient_account_id: str,
    source_ip: str = "203.0.113.10",
    user_agent: str = "aws-sdk-java/2.20",
    error_code: str | None = None,
    error_message: str | None = None,
    encryption_context: dict[str, Any] | None = None,
    request_parameters: dict[str, Any] | None = None,
    response_elements: dict[str, Any] | None = None,
    event_id: str | None = None,
    request_id: str | None = None,
    read_only: bool | None = None,
    shared_event_id: str | None = None,
    vpc_endpoint_id: str | None = None,
) -> dict[str, Any]:
    """One CloudTrail KMS record, shaped like the ones AWS writes."""
    if request_parameters is None:
        request_parameters = {}
        if key_arn:
            request_parameters["keyId"] = key_arn
        if event_name in ("Encrypt", "Decrypt", "ReEncrypt"):
            request_parameters["encryptionAlgorithm"] = "SYMMETRIC_DEFAULT"
        elif event_name.startswith("GenerateDataKey"):
            request_parameters["keySpec"] = "AES_256"
    else:
        request_parameters = dict(request_parameters)
    if encryption_context is not None:
        request_parameters["encryptionContext"] = encryption_context
    record: dict[str, Any] = {
        "eventVersion": "1.11",
        "userIdentity": identity,
        "eventTime": _time_text(event_time),
        "eventSource": "kms.amazonaws.com",
        "eventName": event_name,
        "awsRegion": region,
        "sourceIPAddress": identity.get("invokedBy", source_ip) if identity.get("type") == "AWSService" else source_ip,
        "userAgent": identity.get("invokedBy", user_agent) if identity.get("type") == "AWSService" else user_agent,
    }
    if error_code is not None:
        record["errorCode"] = error_code
    if error_message is not None:
        record["errorMessage"] = error_message
    record["requestParameters"] = request_parameters or None
    record["responseElements"] = response_elements
    record["requestID"] = request_id or str(uuid.uuid4())
    record["eventID"] = event_id or str(uuid.uuid4())
    record["readOnly"] = event_name in READ_ONLY_EVENT_NAMES if read_only is None else read_only
    if key_arn and key_arn.startswith("arn:"):
        owner = key_arn.split(":")[4]
        record["resources"] = [{"accountId": owner, "type": "AWS::KMS::Key", "ARN": key_arn}]
    record["eventType"] = "AwsApiCall"
    record["managementEvent"] = True
    record["recipientAccountId"] = recipient_account_id
    if shared_event_id is not None:
        record["sharedEventID"] = shared_event_id
    if vpc_endpoint_id is not None:
        record["vpcEndpointId"] = vpc_endpoint_id
    record["eventCategory"] = "Management"
    if identity.get("type") != "AWSService":
        record["tlsDetails"] = {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": f"kms.{region}.amazonaws.com",
        }
    return record


# Weighted like real accounts: data-plane calls dominate, key management is rare.
_OPERATIONS = (
    ("Decrypt", 50),
    ("GenerateDataKey", 25),
    ("Encrypt", 8),
    ("DescribeKey", 6),
    ("GenerateDataKeyWithoutPlaintext", 4),
    ("ReEncrypt", 2),
    ("Sign", 1),
    ("ListAliases", 1),
    ("CreateGrant", 1),
    ("RetireGrant", 1),
    ("PutKeyPolicy", 0.2),
    ("DisableKey", 0.1),
    ("ScheduleKeyDeletion", 0.05),
)
_SERVICES = ("s3.amazonaws.com", "secretsmanager.amazonaws.com", "ebs.amazonaws.com", "rds.amazonaws.com")
_ROLES = ("app-backend", "batch-etl", "ci-deploy", "data-pipeline", "web-frontend")
_ERRORS = (
    ("AccessDenied", "User is not authorized to perform: kms:Decrypt"),
    ("InvalidCiphertextException", None),
    ("DisabledException", "Key is disabled."),
    ("ThrottlingException", "Rate exceeded"),
)
_AGENTS = ("aws-sdk-java/2.20.160", "Boto3/1.34.0 md/Botocore#1.34.0", "aws-cli/2.15.0", "aws-sdk-go-v2/1.24.0")


def generate_records(
    n: int,
    *,
    seed: int = 0,
    start: datetime,
    days: int = 30,
    accounts: tuple[str, ...] = ("111122223333", "444455556666"),
    regions: tuple[str, ...] = ("us-east-1", "eu-west-1", "ap-southeast-2"),
    keys_per_account_region: int = 4,
    time_ordered: bool = False,
) -> Iterator[dict[str, Any]]:
    """`n` KMS records spread over `days` from `start`, deterministic for a given seed.

    Times are random across the whole span, record after record (a worst case for ingestion: every
    batch touches every day's rollups), or with `time_ordered` evenly increasing, as CloudTrail
    writes its log files (each covers a few minutes of one account and region).
    """
    rng = random.Random(seed)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    names = [name for name, _ in _OPERATIONS]
    weights = [weight for _, weight in _OPERATIONS]
    keys = {
        (account, region): [
            f"arn:aws:kms:{region}:{account}:key/{uuid.UUID(int=rng.getrandbits(128), version=4)}"
            for _ in range(keys_per_account_region)
        ]
        for account in accounts
        for region in regions
    }
    # As in real accounts, each key mostly serves one workload (an application role, often through
    # an AWS service); everyone else makes up the tail.
    owners = {
        key: (rng.choice(_ROLES), rng.choice((*_SERVICES, None, None)))
        for account_keys in keys.values()
        for key in account_keys
    }
    span = days * 86400
    for i in range(n):
        account = rng.choice(accounts)
        region = rng.choice(regions)
        key = rng.choice(keys[(account, region)])
        event_name = rng.choices(names, weights)[0]
        roll = rng.random() if rng.random() < 0.2 else None
        context = None
        if roll is None:
            role, service = owners[key]
            if service:
                identity = identity_role(account, role, "AWSService", invoked_by=service)
            else:
                identity = identity_role(account, role, f"{role}-{rng.randrange(20)}")
            if service == "s3.amazonaws.com":
                context = {"aws:s3:arn": f"arn:aws:s3:::bucket-{account[-4:]}-{rng.randrange(3)}/obj"}
        elif roll < 0.25:
            service = rng.choice(_SERVICES)
            identity = identity_role(account, rng.choice(_ROLES), "AWSService", invoked_by=service)
            if service == "s3.amazonaws.com":
                context = {"aws:s3:arn": f"arn:aws:s3:::bucket-{account[-4:]}-{rng.randrange(3)}/obj"}
        elif roll < 0.9:
            role = rng.choice(_ROLES)
            identity = identity_role(account, role, f"{role}-{rng.randrange(20)}")
        elif roll < 0.97:
            identity = identity_user(account, rng.choice(("alice", "bob", "carol")))
        else:
            identity = identity_account(rng.choice([a for a in accounts if a != account] or [account]))
        if context is None and event_name in ("Encrypt", "Decrypt", "GenerateDataKey") and rng.random() < 0.5:
            context = {"purpose": rng.choice(("backup", "session", "report")), "tenant": f"t-{rng.randrange(50)}"}
        error_code = error_message = None
        if rng.random() < 0.03:
            error_code, error_message = rng.choice(_ERRORS)
        offset = rng.randrange(span)  # drawn either way, so both orders hold the same records otherwise
        when = start + timedelta(seconds=i * span // n if time_ordered else offset)
        yield kms_record(
            event_name=event_name,
            event_time=when,
            key_arn=key,
            identity=identity,
            region=region,
            recipient_account_id=account,
            source_ip=f"198.51.100.{rng.randrange(1, 255)}",
            user_agent=rng.choice(_AGENTS),
            error_code=error_code,
            error_message=error_message,
            encryption_context=context,
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            request_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        )


def write_log_files(records: Iterable[dict[str, Any]], directory: Path, *, per_file: int = 1000) -> list[Path]:
    """Write CloudTrail-style log files ({"Records": [...]}, gzip) of `per_file` records each."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    batch: list[dict[str, Any]] = []

    def write() -> None:
        path = directory / f"kmsdash_CloudTrail_{len(paths):06d}.json.gz"
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as handle:
            json.dump({"Records": batch}, handle, separators=(",", ":"))
        paths.append(path)
        batch.clear()

    for record in records:
        batch.append(record)
        if len(batch) >= per_file:
            write()
    if batch:
        write()
    return paths
