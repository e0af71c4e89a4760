"""Reads which resources of one (account, region) name a KMS key as their encryption key.

Only this module talks to the other services for the inventory. Each service is read through its
boto3 paginators with the same client-side rate limit as the KMS reads; a service that cannot be
read (access denied, not offered in the region, not supported by the emulator, throttled past the
retries) comes back as "not checked" with the reason, never as an empty list: "we could not look"
and "there is nothing" lead to opposite answers about deleting a key.

What each resource says is kept as it says it (key id, key ARN, alias name or alias ARN); the
write side resolves it to a key ARN through the inventory's aliases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .source import RateLimiter, error_code

log = logging.getLogger(__name__)

# The services read, in the order they are shown.
SERVICES = ("s3", "ec2", "rds", "secretsmanager", "lambda", "dynamodb", "sns", "sqs")

# Per-resource calls, requests per second (list calls are few: one per page).
REFERENCE_RATES: dict[str, float] = {
    "GetBucketLocation": 50,
    "GetBucketEncryption": 50,
    "DescribeTable": 20,
    "GetTopicAttributes": 20,
    "GetQueueAttributes": 20,
}

# S3's answer for a bucket without a default-encryption configuration (not an error for us).
NO_BUCKET_ENCRYPTION = "ServerSideEncryptionConfigurationNotFoundError"


@dataclass
class Reference:
    resource_type: str
    resource: str
    key_ref: str


@dataclass
class ServiceResult:
    service: str
    checked: bool = True
    reason: str = ""
    resources: int = 0
    references: list[Reference] = field(default_factory=list)


# What each service's reader yields: (resources counted, the reference it holds or None).
Found = Iterator[tuple[int, "Reference | None"]]


class NotChecked(Exception):
    """The service could not be read completely; the message says why."""


def _why(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
        return f"{error_code(exc) or 'Error'}: {message}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


class ReferenceReader:
    """`client(service)` gives the boto3 client of one service for the (account, region) read."""

    def __init__(self, client: Callable[[str], Any], region: str, limiter: RateLimiter | None = None) -> None:
        self.client = client
        self.region = region
        self.limiter = limiter or RateLimiter(REFERENCE_RATES)

    def read(self, services: tuple[str, ...] = SERVICES) -> list[ServiceResult]:
        return [self.read_service(service) for service in services]

    def read_service(self, service: str) -> ServiceResult:
        result = ServiceResult(service)
        try:
            for count, reference in getattr(self, f"_{service}")(self.client(service)):
                result.resources += count
                if reference is not None and reference.key_ref:
                    result.references.append(reference)
        except (ClientError, BotoCoreError, NotChecked) as exc:
            reason = str(exc) if isinstance(exc, NotChecked) else _why(exc)
            log.info("references not checked", extra={"service": service, "region": self.region, "reason": reason})
            return ServiceResult(service, checked=False, reason=reason)
        return result

    def _call(self, client: Any, operation: str, method: str, **kwargs) -> dict[str, Any]:
        self.limiter.wait(operation)
        return getattr(client, method)(**kwargs)

    @staticmethod
    def _pages(client: Any, method: str, **kwargs) -> Iterator[dict[str, Any]]:
        yield from client.get_paginator(method).paginate(**kwargs)

    def _s3(self, s3: Any) -> Found:
        for page in self._pages(s3, "list_buckets"):
            for bucket in page.get("Buckets") or []:
                name = bucket.get("Name") or ""
                region = bucket.get("BucketRegion")
                if region is None:
                    location = self._call(s3, "GetBucketLocation", "get_bucket_location", Bucket=name)
                    region = location.get("LocationConstraint") or "us-east-1"
                if region == "EU":  # the legacy name of eu-west-1
                    region = "eu-west-1"
                if region != self.region:
                    continue
                try:
                    config = self._call(s3, "GetBucketEncryption", "get_bucket_encryption", Bucket=name)
                except ClientError as exc:
                    if error_code(exc) == NO_BUCKET_ENCRYPTION:
                        yield 1, None
                        continue
                    raise NotChecked(f"bucket {name}: {_why(exc)}") from exc
                rules = (config.get("ServerSideEncryptionConfiguration") or {}).get("Rules") or []
                key_ref = ""
                for rule in rules:
                    default = rule.get("ApplyServerSideEncryptionByDefault") or {}
                    if str(default.get("SSEAlgorithm", "")).startswith("aws:kms"):
                        key_ref = default.get("KMSMasterKeyID") or ""
                yield 1, Reference("s3-bucket-default-encryption", f"arn:aws:s3:::{name}", key_ref)

    def _ec2(self, ec2: Any) -> Found:
        for page in self._pages(ec2, "describe_volumes"):
            for volume in page.get("Volumes") or []:
                yield 1, Reference("ebs-volume", volume.get("VolumeId", ""), volume.get("KmsKeyId") or "")
        for page in self._pages(ec2, "describe_snapshots", OwnerIds=["self"]):
            for snapshot in page.get("Snapshots") or []:
                yield 1, Reference("ebs-snapshot", snapshot.get("SnapshotId", ""), snapshot.get("KmsKeyId") or "")

    def _rds(self, rds: Any) -> Found:
        for page in self._pages(rds, "describe_db_instances"):
            for db in page.get("DBInstances") or []:
                resource = db.get("DBInstanceArn") or db.get("DBInstanceIdentifier", "")
                yield 1, Reference("rds-instance", resource, db.get("KmsKeyId") or "")
        for page in self._pages(rds, "describe_db_snapshots"):
            for snap in page.get("DBSnapshots") or []:
                resource = snap.get("DBSnapshotArn") or snap.get("DBSnapshotIdentifier", "")
                yield 1, Reference("rds-snapshot", resource, snap.get("KmsKeyId") or "")

    def _secretsmanager(self, secrets: Any) -> Found:
        # A secret without KmsKeyId uses the AWS managed aws/secretsmanager key.
        for page in self._pages(secrets, "list_secrets"):
            for secret in page.get("SecretList") or []:
                yield 1, Reference("secret", secret.get("ARN", ""), secret.get("KmsKeyId") or "")

    def _lambda(self, functions: Any) -> Found:
        for page in self._pages(functions, "list_functions"):
            for function in page.get("Functions") or []:
                yield (
                    1,
                    Reference("lambda-environment", function.get("FunctionArn", ""), function.get("KMSKeyArn") or ""),
                )

    def _dynamodb(self, dynamodb: Any) -> Found:
        for page in self._pages(dynamodb, "list_tables"):
            for name in page.get("TableNames") or []:
                table = self._call(dynamodb, "DescribeTable", "describe_table", TableName=name).get("Table") or {}
                sse = table.get("SSEDescription") or {}
                yield 1, Reference("dynamodb-table", table.get("TableArn", name), sse.get("KMSMasterKeyArn") or "")

    def _sns(self, sns: Any) -> Found:
        for page in self._pages(sns, "list_topics"):
            for topic in page.get("Topics") or []:
                arn = topic.get("TopicArn", "")
                attributes = self._call(sns, "GetTopicAttributes", "get_topic_attributes", TopicArn=arn)
                yield 1, Reference("sns-topic", arn, (attributes.get("Attributes") or {}).get("KmsMasterKeyId") or "")

    def _sqs(self, sqs: Any) -> Found:
        for page in self._pages(sqs, "list_queues"):
            for url in page.get("QueueUrls") or []:
                attributes = (
                    self._call(
                        sqs,
                        "GetQueueAttributes",
                        "get_queue_attributes",
                        QueueUrl=url,
                        AttributeNames=["QueueArn", "KmsMasterKeyId"],
                    ).get("Attributes")
                    or {}
                )
                yield (
                    1,
                    Reference("sqs-queue", attributes.get("QueueArn") or url, attributes.get("KmsMasterKeyId") or ""),
                )


def reader_for(source, region: str) -> ReferenceReader:
    from kmsdash.aws import client_config, session_for

    # One (assumed-role) session for all the services of this (account, region).
    session = session_for(source, region=region)
    clients: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in clients:
            clients[service] = session.client(service, region_name=region, config=client_config())
        return clients[service]

    return ReferenceReader(client, region)
