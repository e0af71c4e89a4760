"""The demo keys raise every finding kind exactly on the key meant for it, and nowhere else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inventory import findings, services
from inventory.demo import seed_demo_keys
from inventory.models import Finding

from .test_inventory_support import MAIN, OTHER, call, ingest, role, session_in, source_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.emulator]

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")


def activity(key, now):
    """What CloudTrail would show for a demo key, from its usage hint."""
    ago = lambda days: now - timedelta(days=days)  # noqa: E731
    owner = dict(account=key.account, region=key.region)
    normal = [call(key.arn, ago(d), identity=role(key.account, "app-backend"), **owner) for d in (40, 20, 5, 1)]
    good = {"Department": "Finance", "DataClassification": "Internal"}
    if key.usage == "none":
        return []
    if key.usage == "disabled-calls":
        return [
            call(key.arn, ago(40), identity=role(key.account, "app-backend"), **owner),
            call(key.arn, ago(1), identity=role(key.account, "app-backend"), error_code="DisabledException", **owner),
        ]
    if key.usage == "still-used":
        return normal
    if key.usage == "cross-account":
        return normal + [call(key.arn, ago(d), identity=role(key.foreign_account, "partner"), **owner) for d in (30, 2)]
    if key.usage == "new-principal":
        return normal + [call(key.arn, ago(2), identity=role(key.account, "newcomer"), **owner)]
    if key.usage == "bad-context":
        return [
            call(key.arn, ago(d), identity=role(key.account, "app-backend"), encryption_context=good, **owner)
            for d in (40, 20, 1)
        ] + [
            call(key.arn, ago(40), identity=role(key.account, "reporting"), encryption_context=good, **owner),
            call(
                key.arn,
                ago(2),
                identity=role(key.account, "reporting"),
                encryption_context={"Department": "Marketing", "DataClassification": "Internal"},
                **owner,
            ),
        ]
    return normal


def test_every_finding_kind_appears_exactly_on_its_demo_key(aws):
    keys = seed_demo_keys(session_in, accounts=(MAIN, OTHER), regions=REGIONS, emulator_url=aws.url)
    now = datetime.now(UTC)
    ingest(*(record for key in keys for record in activity(key, now)))
    for account in (MAIN, OTHER):
        source = source_for(account, regions=REGIONS)
        for region in REGIONS:
            services.ingest_keys(source, region)
    findings.recompute()

    expected = {(k.finding, k.arn) for k in keys if k.finding}
    expected.add(("trail-excludes-kms", ""))
    expected.add(("key-churn", ""))  # alias/load-test, created 5 days ago and scheduled for deletion
    assert set(Finding.objects.open().values_list("kind", "key")) == expected
    assert {kind for kind, _ in expected} == set(Finding.Kind.values)
    trail = Finding.objects.get(kind="trail-excludes-kms")
    assert trail.account_id == OTHER and trail.subject.endswith(":trail/cost-saver-no-kms")
    cross = Finding.objects.get(kind="policy-cross-account")
    assert cross.evidence["used"] is True
