"""Seeding the AWS emulator with the demo world, and reading it back the way kmsdash does."""

from __future__ import annotations

import re
import urllib.request
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from audits.cloudtrail import CRITICAL_EVENT_NAMES
from audits.ingest import ingest_records, start_run
from audits.models import Event, IngestRun
from audits.sources.files import iter_file_records
from demo.activity import ACCOUNTS, KEYS, REGIONS
from demo.seed import EXTERNAL_ID, reader_role_arn, seed_world, trail_bucket
from tests.support import Emulator

pytestmark = pytest.mark.emulator

LOG_KEY_RE = re.compile(
    r"^AWSLogs/(\d{12})/CloudTrail/([a-z0-9-]+)/\d{4}/\d{2}/\d{2}/"
    r"\1_CloudTrail_\2_\d{8}T\d{4}Z_[A-Za-z0-9]{16}\.json\.gz$"
)
SMALL = {"days": 3, "events_per_day": 150}


def session(account: str) -> boto3.Session:
    """The account as kmsdash reaches it: AssumeRole into the reader role with the ExternalId."""
    credentials = boto3.client("sts").assume_role(
        RoleArn=reader_role_arn(account), RoleSessionName="test", ExternalId=EXTERNAL_ID
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def all_objects(s3, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


@pytest.fixture(scope="module")
def seeded(_emulator_server):
    """One small demo world for the module's read-only tests (seeding takes seconds)."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ENDPOINT_URL": _emulator_server.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        emulator = Emulator(_emulator_server.url)
        emulator.reset()
        urllib.request.urlopen(urllib.request.Request(f"{emulator.url}/moto-api/reset", data=b"", method="POST"))
        yield seed_world(emulator.url, **SMALL)


def test_the_keys_exist_in_each_account_and_region_with_aliases_tags_and_states(seeded):
    assert len(seeded.keys) == len(KEYS) == 20
    for account in ACCOUNTS:
        for region in REGIONS:
            kms = session(account).client("kms", region_name=region)
            ids = {key["KeyId"] for key in kms.list_keys(Limit=1000)["Keys"]}
            expected = {k.key_id for k in seeded.keys if k.spec.account == account and k.spec.region == region}
            # Beside them, the lifecycle stories' keys (demo/lifecycle.py; replicas share their id).
            lifecycle = {arn.rsplit("/", 1)[1] for arn in seeded.lifecycle.values() if f":{account}:" in arn}
            assert ids - lifecycle == expected
            aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases(Limit=100)["Aliases"]}
            for key in seeded.keys:
                if key.spec.account == account and key.spec.region == region:
                    assert aliases[key.spec.alias_name] == key.key_id
                    metadata = kms.describe_key(KeyId=key.key_id)["KeyMetadata"]
                    assert metadata["Arn"] == key.arn
                    assert metadata["KeyState"] == key.spec.state
                    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key.key_id)["Tags"]}
                    assert tags == key.spec.tags
    signing = next(k for k in seeded.keys if k.spec.alias == "data-signing")
    kms = session(signing.spec.account).client("kms", region_name=signing.spec.region)
    assert kms.describe_key(KeyId=signing.key_id)["KeyMetadata"]["KeyUsage"] == "SIGN_VERIFY"
    ebs = next(k for k in seeded.keys if k.spec.alias == "prod-ebs")
    kms = session(ebs.spec.account).client("kms", region_name=ebs.spec.region)
    assert len(kms.list_grants(KeyId=ebs.key_id)["Grants"]) == 2


def test_the_log_files_land_in_each_accounts_trail_bucket_with_the_cloudtrail_layout(seeded):
    total = 0
    for account in ACCOUNTS:
        s3 = session(account).client("s3", region_name="us-east-1")
        keys = all_objects(s3, trail_bucket(account))
        logs = [key for key in keys if "/CloudTrail/" in key]
        assert logs and all(LOG_KEY_RE.match(key) for key in logs)
        assert {LOG_KEY_RE.match(key)[1] for key in logs} == {account}
        assert {LOG_KEY_RE.match(key)[2] for key in logs} == set(REGIONS)
        # Digest files share the bucket under their own prefix.
        assert all(key.startswith(f"AWSLogs/{account}/CloudTrail-Digest/") for key in keys if key not in logs)
        total += len(keys)
    assert total == seeded.log_files


@pytest.mark.django_db
def test_ingesting_the_bucket_objects_gives_back_every_seeded_event(seeded):
    run = start_run(IngestRun.Kind.S3)
    new = ignored = 0
    for account in ACCOUNTS:
        s3 = session(account).client("s3", region_name="us-east-1")
        for key in all_objects(s3, trail_bucket(account)):
            if "/CloudTrail/" not in key:
                continue
            body = s3.get_object(Bucket=trail_bucket(account), Key=key)["Body"]
            counts = ingest_records(iter_file_records(body, name=key), run=run, location=key)
            new += counts.events_new
            ignored += counts.ignored
    assert new == seeded.records == Event.objects.count()
    assert ignored > 0  # the other services' events in the same files
    assert set(Event.objects.values_list("key", flat=True).distinct()) >= {
        k.arn for k in seeded.keys if k.spec.state == "Enabled" and k.spec.share
    }


def test_each_account_has_a_trail_and_the_data_account_one_that_leaves_kms_out(seeded):
    for account in ACCOUNTS:
        cloudtrail = session(account).client("cloudtrail", region_name="us-east-1")
        trails = {t["Name"]: t for t in cloudtrail.describe_trails()["trailList"]}
        assert trails["management-events"]["S3BucketName"] == trail_bucket(account)
        assert trails["management-events"]["IsMultiRegionTrail"]
        excluded = [
            name
            for name in trails
            if any(
                "kms.amazonaws.com" in s.get("ExcludeManagementEventSources", [])
                for s in cloudtrail.get_event_selectors(TrailName=name).get("EventSelectors", [])
            )
        ]
        assert excluded == (["security-lake-export"] if ACCOUNTS[account] == "data" else [])


def test_lookup_events_serves_the_recent_key_management_events_to_the_key_owner(seeded):
    assert seeded.lookup_events > 0
    served = []
    for account in ACCOUNTS:
        for region in REGIONS:
            cloudtrail = session(account).client("cloudtrail", region_name=region)
            pages = cloudtrail.get_paginator("lookup_events").paginate(
                LookupAttributes=[{"AttributeKey": "EventSource", "AttributeValue": "kms.amazonaws.com"}],
                PaginationConfig={"PageSize": 50},
            )
            for page in pages:
                served.extend((account, region, event["EventName"]) for event in page["Events"])
    assert len(served) == seeded.lookup_events
    assert CRITICAL_EVENT_NAMES & {name for _, _, name in served}


def test_cost_explorer_bills_both_accounts_from_the_previous_month_on(seeded):
    assert seeded.cost_rows > 0
    today = datetime.now(UTC).date()
    first = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    result = boto3.client("ce", region_name="us-east-1").get_cost_and_usage(
        TimePeriod={"Start": first.isoformat(), "End": (first + timedelta(days=3)).isoformat()},
        Granularity="DAILY",
        Metrics=["UnblendedCost"],
        GroupBy=[{"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"}, {"Type": "DIMENSION", "Key": "USAGE_TYPE"}],
    )
    groups = [group["Keys"] for day in result["ResultsByTime"] for group in day["Groups"]]
    assert {account for account, _ in groups} == set(ACCOUNTS)
    assert {usage_type for _, usage_type in groups} >= {f"{region}-KMS-Keys" for region in REGIONS}
