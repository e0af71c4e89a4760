"""The demo world, ingested the way `make run` does it (S3 trail files, inventory, IAM, the access
analysis), raises every access finding kind on the principal planted for it."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from demo.activity import DATA, PROD
from inventory.models import Finding

pytestmark = [pytest.mark.emulator]


def iam(account: str, kind: str, name: str) -> str:
    return f"arn:aws:iam::{account}:{kind}/{name}"


@pytest.mark.django_db
def test_the_demo_world_raises_every_access_finding_kind_on_its_planted_case(aws, settings):
    settings.KMSDASH_DEMO = True
    settings.KMSDASH_S3_INITIAL_DAYS = 12
    call_command(
        "seed_demo",
        "--endpoint",
        aws.url,
        "--days",
        "10",
        "--events-per-day",
        "200",
        "--no-users",
        stdout=io.StringIO(),
    )
    for command in ("ingest_cloudtrail", "ingest_keys", "ingest_iam", "analyse_access"):
        call_command(command, *(["--source", "s3"] if command == "ingest_cloudtrail" else []), stdout=io.StringIO())

    found = {(f.kind, f.subject) for f in Finding.objects.open()}
    subjects = {kind: {s for k, s in found if k == kind} for kind, _ in found}
    assert iam(PROD, "policy", "kms-decrypt-everything") in subjects["iam-decrypt-all-keys-managed"]
    assert any(s.endswith(":user/bob.sre#break-glass-decrypt") for s in subjects["iam-decrypt-all-keys-inline"])
    assert {iam(PROD, "role", "key-policy-editor"), iam(DATA, "role", "ci-deployer")} <= subjects["escalation-path"]
    assert any(s.startswith(iam(PROD, "role", "legacy-batch") + "|") for s in subjects["unused-access"])
    assert iam(DATA, "role", "spark-driver") in subjects["access-unexplained"]
    # The app roles whose policies cover their calls are explained.
    assert iam(PROD, "role", "key-policy-editor") not in subjects["access-unexplained"]
