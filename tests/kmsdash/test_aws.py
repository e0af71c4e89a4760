"""The boto3 client factory: standard retries, timeouts, default chain, AssumeRole with ExternalId."""

from __future__ import annotations

import re

import pytest
from django.apps import apps

from audits.models import Source
from kmsdash.aws import client, session_for

pytestmark = pytest.mark.emulator


def test_clients_use_standard_retries_counting_the_first_attempt_and_bounded_timeouts(aws):
    cloudtrail = client("cloudtrail", "eu-west-1", max_attempts=3)

    config = cloudtrail.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert (config.connect_timeout, config.read_timeout) == (5, 30)
    assert cloudtrail.meta.region_name == "eu-west-1"
    assert cloudtrail.meta.endpoint_url == aws.url  # AWS_ENDPOINT_URL, honoured by boto3 itself


def test_without_a_role_the_default_credential_chain_is_used(aws):
    assert session_for(None).client("sts").get_caller_identity()["Account"] == "123456789012"
    assert session_for(Source(account_id="111122223333")).client("sts").get_caller_identity()["Account"] == (
        "123456789012"
    )


def test_a_source_with_a_role_is_reached_through_assume_role(aws):
    source = Source(
        account_id="444455556666", role_arn="arn:aws:iam::444455556666:role/kmsdash-reader", external_id="ext-7"
    )

    identity = client("sts", "us-east-1", source=source).get_caller_identity()

    assert identity["Account"] == "444455556666"
    assert identity["Arn"] == "arn:aws:sts::444455556666:assumed-role/kmsdash-reader/kmsdash"
    # One AssumeRole by the default identity, then the call with the role's temporary key.
    sts_calls = [r for r in aws.requests() if r["target"].startswith("sts:")]
    assert [r["account"] for r in sts_calls] == ["123456789012", "444455556666"]


def test_no_model_can_hold_aws_secrets():
    secret = re.compile(r"secret|access_key|session_token|password_aws", re.IGNORECASE)
    offenders = [
        f"{model.__name__}.{field.name}"
        for model in apps.get_models()
        if model._meta.app_label in ("audits", "kmsdash", "costs", "inventory")
        for field in model._meta.get_fields()
        if secret.search(field.name)
    ]
    assert offenders == []


def test_assume_role_works_on_a_host_without_a_configured_region_and_uses_regional_sts(aws, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    source = Source(account_id="444455556666", role_arn="arn:aws:iam::444455556666:role/kmsdash-reader")

    assert client("sts", "eu-west-1", source=source).get_caller_identity()["Account"] == "444455556666"
    assert {r["region"] for r in aws.requests() if r["target"].startswith("sts:")} == {"eu-west-1"}
