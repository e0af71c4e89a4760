"""The demo's Cost Explorer dataset: billed like AWS bills, and consistent with the activity."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from audits.models import DailyRollup
from costs import estimate, selectors, services
from costs.demo import demo_dataset
from inventory.models import Key

A, B = "111122223333", "444455556666"


def by_usage_type(rows, day):
    return {r["usage_type"]: (Decimal(r["cost"]), Decimal(r["usage"])) for r in rows if r["date"] == day}


def test_requests_use_up_the_accounts_free_tier_across_regions_first():
    activity = {
        (date(2026, 11, 1), A, "us-east-1"): 15_000,
        (date(2026, 11, 2), A, "eu-west-1"): 4_000,
        (date(2026, 11, 2), A, "us-east-1"): {"requests": 6_000, "asymmetric_requests": 100, "keys": 2},
    }
    rows = demo_dataset(date(2026, 11, 1), date(2026, 11, 2), activity, today=date(2026, 11, 20))
    first, second = by_usage_type(rows, "2026-11-01"), by_usage_type(rows, "2026-11-02")
    assert first["us-east-1-KMS-Requests"] == (0, 15_000)
    assert first["Global-KMS-Requests"] == (0, 15_000)
    assert first["us-east-1-KMS-Keys"][0] == (Decimal(4) / 30).quantize(Decimal("1e-10"))
    # eu-west-1 comes first that day and takes 4,000 of the 5,000 free requests left.
    assert second["eu-west-1-KMS-Requests"] == (0, 4_000)
    assert second["us-east-1-KMS-Requests"] == (Decimal("0.015"), 6_000)
    assert second["us-east-1-KMS-Requests-Asymmetric"] == (Decimal("0.0015"), 100)
    assert second["Global-KMS-Requests"] == (0, 5_000)
    assert all(r["estimated"] for r in rows)


def test_only_the_current_month_is_estimated():
    rows = demo_dataset(
        date(2026, 10, 31), date(2026, 11, 1), {(date(2026, 10, 31), A, "us-east-1"): 1}, today=date(2026, 11, 5)
    )
    assert {(r["date"], r["estimated"]) for r in rows} == {("2026-10-31", False), ("2026-11-01", True)}


@pytest.mark.django_db
def test_the_per_key_estimate_reconciles_with_the_demo_bill_for_the_same_activity(aws):
    start, end = date(2026, 11, 1), date(2026, 11, 10)
    activity = {}
    for offset in range(10):
        day = start + timedelta(days=offset)
        for account, region, n in ((A, "us-east-1", 9_000 + offset * 1_000), (B, "eu-west-1", 50_000)):
            activity[(day, account, region)] = n
            for k in range(4):
                arn = f"arn:aws:kms:{region}:{account}:key/0000000{k}-0000-0000-0000-000000000000"
                when = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
                DailyRollup.objects.create(
                    day=day,
                    account_id=account,
                    region=region,
                    key=arn,
                    operation="Decrypt",
                    principal=f"arn:aws:iam::{account}:role/app",
                    service="",
                    error_code="",
                    after_hours=False,
                    count=n // 4 + (k < n % 4),
                    first_seen=when,
                    last_seen=when,
                )
                if offset == 0:
                    Key.objects.create(
                        arn=arn,
                        key_id=arn.rsplit("/", 1)[1],
                        account_id=account,
                        region=region,
                        key_manager="CUSTOMER",
                        key_spec="SYMMETRIC_DEFAULT",
                        key_state="Enabled",
                        creation_date=datetime(2025, 1, 1, tzinfo=UTC),
                        last_seen_at=timezone.now(),
                    )
    rows = demo_dataset(start, end, activity, today=date(2026, 11, 11))
    aws.control("ce/dataset", {"rows": rows})
    with time_machine.travel(datetime(2026, 11, 11, 6, tzinfo=UTC), tick=True):
        services.ingest_costs()
    recon = estimate.reconcile(estimate.estimate(start, end), selectors.daily_costs(start, end))
    assert recon.actual == sum(Decimal(r["cost"]) for r in rows)
    assert recon.actual > Decimal("4")  # 8 key-months for 10 days, 615,000 requests, two free tiers
    # Only the 10-place rounding of Cost Explorer's amounts is left unattributed.
    assert abs(recon.unattributed) < Decimal("0.000001")
    assert all(abs(day.unattributed) < Decimal("0.0000001") for day in recon.days)
