"""Helpers shared by the inventory and findings tests (no tests here)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3

from audits import synthetic
from audits.ingest import ingest_records, start_run
from audits.models import Source

MAIN = "111122223333"
OTHER = "444455556666"
STRANGER = "999988887777"
REGION = "us-east-1"


def session_in(account: str) -> boto3.Session:
    """A boto3 session in `account`, the way the app reaches it: STS AssumeRole."""
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/kmsdash-test", RoleSessionName="test"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def kms_in(account: str, region: str = REGION):
    return session_in(account).client("kms", region_name=region)


def source_for(account: str, regions=(REGION,)) -> Source:
    source, _ = Source.objects.get_or_create(
        account_id=account,
        defaults={"regions": list(regions), "role_arn": f"arn:aws:iam::{account}:role/kmsdash-reader"},
    )
    return source


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def root_statement(account: str) -> dict:
    return {
        "Sid": "Enable IAM policies",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }


def role(account: str, name: str) -> dict:
    return synthetic.identity_role(account, name, "session-1")


def role_arn(account: str, name: str) -> str:
    return f"arn:aws:iam::{account}:role/{name}"


def ingest(*records: dict) -> None:
    ingest_records(list(records), run=start_run("files"))


def call(
    key_arn: str | None,
    when: datetime,
    *,
    event_name: str = "Decrypt",
    identity: dict | None = None,
    error_code: str | None = None,
    account: str = MAIN,
    region: str = REGION,
    **extra,
) -> dict:
    return synthetic.kms_record(
        event_name=event_name,
        event_time=when if when.tzinfo else when.replace(tzinfo=UTC),
        key_arn=key_arn,
        identity=identity or role(account, "app-backend"),
        region=region,
        recipient_account_id=account,
        error_code=error_code,
        **extra,
    )
