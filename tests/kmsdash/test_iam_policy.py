"""The IAM policies in deploy/iam/ are exactly what the product calls: every AWS request a
representative run makes against the emulator is allowed, and every allowed action is called.

One run, end to end, against one emulator (so it holds under pytest-xdist, where each worker has an
emulator of its own): the demo world is seeded, its accounts are registered as Sources reached
through AssumeRole into the reader role, and then every path that talks to AWS runs once —
LookupEvents and S3 ingestion, the key inventory, Cost Explorer, and alert delivery to SNS and to a
webhook whose secret is envelope-encrypted with KMS. Requests signed with the assumed role's keys
are the reader role's (deploy/iam/kmsdash-reader.json); those signed with the processes' own
credentials are the application's (deploy/iam/kmsdash-app.json).

When this fails, the message names each action to add to or remove from which file. A request the
mapping below cannot name fails too: add its method and path to S3_ACTIONS or its protocol here.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from urllib.parse import parse_qs

import boto3
import pytest
from django.core.management import call_command

from audits.models import IngestRun, Source
from demo.seed import ensure_secrets_key, register_sources, seed_world
from notify.delivery import deliver_pending
from notify.services import notify_alert
from tests.notify.support import make_alert

pytestmark = [pytest.mark.django_db, pytest.mark.emulator]

ROOT = Path(__file__).resolve().parent.parent.parent
POLICIES = {"reader": ROOT / "deploy/iam/kmsdash-reader.json", "app": ROOT / "deploy/iam/kmsdash-app.json"}
APP_ACCESS_KEY = "testing"  # the `aws` fixture's credentials: the processes' own identity

# Allowed although the emulated run cannot call them, each with the reason.
REAL_AWS_ONLY: dict[str, dict[str, str]] = {
    "reader": {
        # S3 asks for it when the trail bucket's objects are SSE-KMS encrypted (docs/deploy.md); the
        # emulator stores them unencrypted, so no such request ever reaches it.
        "kms:Decrypt": "S3 decrypts SSE-KMS trail logs on GetObject (kms:ViaService s3)",
        # access/ingest.py walks the organisation's levels for SCPs and RCPs only when the account
        # belongs to one; the emulated run's accounts do not (tests/access/test_ingest_iam.py reads
        # them through an OU).
        "organizations:ListParents": "SCP and RCP reading, in an organisation only",
        "organizations:ListPoliciesForTarget": "SCP and RCP reading, in an organisation only",
        "organizations:DescribePolicy": "SCP and RCP reading, in an organisation only",
        # inventory/references.py reads each table, topic and queue it lists; the emulated run's
        # accounts have none (tests/inventory/test_retirement.py reads all eight services).
        "dynamodb:DescribeTable": "per DynamoDB table listed",
        "sns:GetTopicAttributes": "per SNS topic listed",
        "sqs:GetQueueAttributes": "per SQS queue listed",
    },
    "app": {},
}
# Calls a branch adds before this run makes them: allowed already, and not yet called here. Empty
# once every branch has landed; the test then also catches a call left out.
PENDING: dict[str, set[str]] = {"reader": set(), "app": set()}

# Signing names whose IAM prefix differs (none of the product's so far; e.g. CloudWatch signs as
# "monitoring" and is "cloudwatch" in IAM).
IAM_PREFIX = {"monitoring": "cloudwatch", "email": "ses"}

# S3's REST API: (method, bucket-level or object-level, sub-resource in the query) -> IAM action.
# ListObjects and ListObjectsV2 are both s3:ListBucket; HeadObject is s3:GetObject.
S3_ACTIONS = {
    ("GET", "service", ""): "s3:ListAllMyBuckets",
    ("GET", "bucket", ""): "s3:ListBucket",
    ("HEAD", "bucket", ""): "s3:ListBucket",
    ("GET", "bucket", "encryption"): "s3:GetEncryptionConfiguration",
    ("GET", "bucket", "location"): "s3:GetBucketLocation",
    ("GET", "bucket", "policy"): "s3:GetBucketPolicy",
    ("GET", "object", ""): "s3:GetObject",
    ("HEAD", "object", ""): "s3:GetObject",
}
S3_SUBRESOURCES = {"encryption", "location", "policy", "acl", "versioning", "tagging", "logging", "lifecycle"}
# Lambda's REST API, by method and path.
REST_ACTIONS = {("lambda", "GET", re.compile(r"^/2015-03-31/functions/?$")): "lambda:ListFunctions"}


def iam_action(request: dict) -> str | None:
    """The IAM action one logged emulator request needs, or None when this mapping cannot tell."""
    service = request.get("service", "")
    prefix = IAM_PREFIX.get(service, service)
    target = request["target"]
    if request.get("action"):  # query protocol: STS, IAM, SNS, EC2, RDS
        return f"{prefix}:{request['action']}"
    if not target.startswith(f"{service}:"):  # JSON protocol: X-Amz-Target is "<Service>.<Operation>"
        return f"{prefix}:{target.rsplit('.', 1)[-1]}"
    method, path = request["method"], request["path"]
    if service == "s3":
        parts = [part for part in path.split("/") if part]
        level = "service" if not parts else "bucket" if len(parts) == 1 else "object"
        query = parse_qs(request.get("query", ""), keep_blank_values=True)
        sub = next((name for name in query if name in S3_SUBRESOURCES), "")
        return S3_ACTIONS.get((method, level, sub))
    for (rest_service, rest_method, pattern), action in REST_ACTIONS.items():
        if service == rest_service and method == rest_method and pattern.match(path):
            return action
    return None


def allowed_actions(path: Path) -> set[str]:
    document = json.loads(path.read_text())
    actions: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow", f"{path.name}: {statement.get('Sid')} is not an Allow"
        listed = statement["Action"]
        actions.update([listed] if isinstance(listed, str) else listed)
    return actions


@pytest.fixture
def representative_run(aws, settings):
    """Every product path that calls AWS, once; returns the emulator requests they made."""
    settings.KMSDASH_SECRETS_KMS_KEY = ensure_secrets_key(aws.url, "alias/kmsdash-test-secrets")
    settings.KMSDASH_LOOKUP_RATE_PER_SECOND = 1000
    settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES = 2 * 24 * 60  # the first day in one window
    topic = boto3.client("sns", region_name="us-east-1").create_topic(Name="kms-alerts")["TopicArn"]
    seeded = seed_world(aws.url, days=2, events_per_day=40, file_minutes=720)
    register_sources(seeded.buckets)
    start = len(aws.requests())

    # One account and region per source is enough to make every call; the whole world would only be slower.
    account, region = next(iter(seeded.buckets)), "us-east-1"
    scope = ["--account-id", account, "--region", region]
    # The inventory first: before any event is stored, it asks GetKeyLastUsage about every key (later
    # it skips keys CloudTrail already shows in use).
    call_command("ingest_keys", *scope, stdout=io.StringIO())
    call_command("ingest_iam", "--account-id", account, stdout=io.StringIO())
    call_command("ingest_cloudtrail", "--source", "lookup", *scope, stdout=io.StringIO())
    call_command("ingest_cloudtrail", "--source", "s3", *scope, stdout=io.StringIO())
    call_command("ingest_costs", stdout=io.StringIO())
    call_command("add_alert_channel", "topic", "--sns-topic", topic, stdout=io.StringIO())
    # The webhook's generated signing secret is sealed with KMS (GenerateDataKey) and opened for
    # delivery (Decrypt); nothing listens on port 9, so the attempt itself fails and is retried later.
    call_command("add_alert_channel", "hook", "--webhook", "http://127.0.0.1:9/", stdout=io.StringIO())
    notify_alert(make_alert(), event="opened")
    deliver_pending()
    return aws.requests()[start:]


def test_the_iam_policies_allow_exactly_what_the_product_calls(representative_run):
    # The run itself first: each path really reached the emulator, through the reader role.
    assert Source.objects.filter(role_arn__startswith="arn:aws:iam::").count() >= 2
    kinds = set(IngestRun.objects.filter(status=IngestRun.Status.SUCCEEDED).values_list("kind", flat=True))
    assert kinds >= {"lookup", "s3"}
    reached = {iam_action(r) for r in representative_run}
    assert {"cloudtrail:LookupEvents", "s3:GetObject", "kms:ListKeys", "ce:GetCostAndUsage", "sns:Publish"} <= reached

    called: dict[str, set[str]] = {"reader": set(), "app": set()}
    unmapped = []
    for request in representative_run:
        action = iam_action(request)
        if action is None:
            unmapped.append(f"{request['service']} {request['method']} {request['path']}?{request.get('query', '')}")
            continue
        called["app" if request["access_key"] == APP_ACCESS_KEY else "reader"].add(action)
    assert not unmapped, (
        f"requests this test cannot map to an IAM action (extend S3_ACTIONS / REST_ACTIONS): {unmapped}"
    )

    problems = []
    for role, path in POLICIES.items():
        allowed = allowed_actions(path)
        assert not [a for a in allowed if "*" in a], f"{path.name}: wildcard actions are not least privilege"
        for action in sorted(called[role] - allowed):
            problems.append(
                f"{path.relative_to(ROOT)}: add {action} (the product calls it with the {role} credentials)"
            )
        for action in sorted(allowed - called[role] - set(REAL_AWS_ONLY[role]) - PENDING[role]):
            problems.append(
                f"{path.relative_to(ROOT)}: remove {action} (never called), or list it in REAL_AWS_ONLY with the reason"
            )
    assert not problems, "\n".join(problems)


def test_the_allowlists_only_name_actions_of_the_policy():
    for role, path in POLICIES.items():
        stale = (set(REAL_AWS_ONLY[role]) | PENDING[role]) - allowed_actions(path)
        assert not stale, f"{path.name} does not allow {sorted(stale)}, yet this test excuses them"
