"""The demo world shows one key of each "safe to delete?" verdict and every lifecycle finding."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from demo.seed import Emulator, find_keys
from inventory import retirement
from inventory.models import Alias, Finding

pytestmark = [pytest.mark.django_db, pytest.mark.emulator]


def test_the_demo_has_a_key_of_each_verdict_and_the_lifecycle_findings(aws, settings):
    settings.KMSDASH_DEMO = True
    settings.KMSDASH_S3_INITIAL_DAYS = 12
    # A short demo month: the window must fit in the CloudTrail data it holds (10 days).
    settings.KMSDASH_RETIREMENT_WINDOW_DAYS = 8
    settings.KMSDASH_RETIREMENT_IN_USE_DAYS = 2
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
    call_command("ingest_cloudtrail", "--source", "s3", stdout=io.StringIO())
    call_command("ingest_keys", stdout=io.StringIO())

    arn = {key.spec.alias: key.arn for key in find_keys(Emulator(aws.url))}
    aliases = Alias.objects.filter(key__isnull=False).select_related("key")
    arn.update({a.name[6:]: a.key.arn for a in aliases if a.key is not None})  # the lifecycle keys
    verdicts = {v.key: v for v in retirement.verdicts()}
    assert {alias: verdicts[arn[alias]].verdict for alias in (
        "prod-orders-s3", "prod-ops-tools", "prod-report-exports", "data-eu-archive-2023", "prod-global-legacy"
    )} == {
        "prod-orders-s3": "in-use",
        "prod-ops-tools": "recently-used",
        "prod-report-exports": "no-recent-use",
        "data-eu-archive-2023": "safe-to-schedule",
        "prod-global-legacy": "safe-to-schedule",
    }  # fmt: skip
    assert "PendingReplicaDeletion" in verdicts[arn["prod-global-legacy"]].evidence["multi_region"]["deletion_clock"]
    assert [r["resource"] for r in verdicts[arn["prod-report-exports"]].evidence["references"]["resources"]] == [
        "arn:aws:s3:::prod-report-exports"
    ]

    found = set(Finding.objects.open().values_list("kind", "key"))
    assert {
        ("replica-policy-drift", arn["prod-global-sessions"]),
        ("key-material-expiring", arn["prod-hsm-import"]),
        ("key-material-expired", arn["data-partner-import"]),
        ("rotation-on-demand-budget", arn["prod-tokenization"]),
    } <= found
    (churn,) = Finding.objects.open().filter(kind="key-churn")
    assert churn.evidence["keys"] == 2
    # The lifecycle keys raise nothing else (the world's own findings stay as they were).
    unused = {key for kind, key in found if kind == "unused-key"}
    assert unused == {arn["data-eu-archive-2023"]}
