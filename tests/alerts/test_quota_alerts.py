"""The request-quota alert kinds, positive and negative: quota-headroom and throttling."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts.models import Alert, AlertRule, Kind
from inventory.models import Key
from tests.alerts.support import K1, K2, A, B, T, ingest, rec

pytestmark = pytest.mark.django_db

QUOTA = 10  # requests/s: 80% of it is 8/s, 480 calls in one minute


@pytest.fixture(autouse=True)
def small_quota(settings):
    settings.KMSDASH_KMS_QUOTAS = {("*", "us-east-1", "symmetric"): float(QUOTA), ("*", "*", "custom-key-store"): 5.0}


def minute_of(calls: int, *, start=T, error: str | None = None, **fields) -> list[dict]:
    return [rec(when=start + timedelta(seconds=i * 60 / calls), error=error, **fields) for i in range(calls)]


def alerts(kind: str) -> list[Alert]:
    return list(Alert.objects.filter(kind=kind))


def test_a_minute_at_eighty_percent_of_the_quota_alerts_with_its_rate_and_minute(notified):
    ingest(minute_of(479, start=T) + minute_of(485, start=T + timedelta(minutes=5)))
    notified.evaluate()

    (alert,) = alerts(Kind.QUOTA_HEADROOM)
    assert (alert.account_id, alert.region, alert.subject) == (A, "us-east-1", "symmetric")
    assert alert.observed == 8.1 and alert.threshold == 8.0 and alert.baseline == QUOTA
    assert alert.evidence["hours"] == {"2026-11-20T12:05:00Z": 485} and alert.count == 485
    assert "12:05" in alert.summary and "81%" in alert.summary


def test_a_busy_minute_below_the_ratio_stays_silent_and_the_ratio_is_configurable(notified):
    ingest(minute_of(470))
    notified.evaluate()
    assert alerts(Kind.QUOTA_HEADROOM) == []

    AlertRule.objects.update_or_create(kind=Kind.QUOTA_HEADROOM, defaults={"enabled": True, "config": {"ratio": 0.5}})
    ingest(minute_of(310, start=T + timedelta(minutes=1)))
    notified.evaluate()
    (alert,) = alerts(Kind.QUOTA_HEADROOM)
    assert alert.evidence["hours"] == {"2026-11-20T12:01:00Z": 310}


def test_a_minute_judged_again_with_its_later_events_counts_its_whole_total_once(notified):
    calls = minute_of(600)
    ingest(calls[:500])
    notified.evaluate()
    ingest(calls[500:])
    notified.evaluate()
    (alert,) = alerts(Kind.QUOTA_HEADROOM)
    assert alert.count == 600 and alert.observed == 10.0


def test_calls_of_other_accounts_on_this_accounts_key_do_not_use_its_quota(notified):
    from audits.synthetic import identity_account

    ingest(minute_of(600, identity=identity_account(B)))
    notified.evaluate()
    assert alerts(Kind.QUOTA_HEADROOM) == []


def test_a_key_in_a_custom_key_store_alerts_on_the_custom_key_store_quota(notified):
    Key.objects.create(arn=K2, key_id="k2", account_id=A, region="us-east-1", origin="AWS_CLOUDHSM", last_seen_at=T)
    ingest(minute_of(300, key=K2) + minute_of(300, key=K1, start=T + timedelta(minutes=2)))
    notified.evaluate()
    (alert,) = alerts(Kind.QUOTA_HEADROOM)
    assert (alert.subject, alert.observed, alert.baseline) == ("custom-key-store", 5.0, 5.0)


def test_throttled_calls_reaching_the_threshold_in_a_minute_alert_per_account_and_region(notified):
    ingest(
        minute_of(9, error="ThrottlingException", start=T)
        + minute_of(6, error="ThrottlingException", start=T + timedelta(minutes=3))
        + minute_of(6, error="ThrottlingException", start=T + timedelta(minutes=3), key=K2)
        + minute_of(50, error="AccessDeniedException", start=T + timedelta(minutes=7))
    )
    notified.evaluate()

    (alert,) = alerts(Kind.THROTTLING)
    assert (alert.account_id, alert.region, alert.error_code) == (A, "us-east-1", "ThrottlingException")
    assert alert.evidence["hours"] == {"2026-11-20T12:03:00Z": 12} and alert.count == 12
    assert alert.threshold == 10


def test_throttled_calls_below_the_threshold_stay_silent(notified):
    ingest(
        minute_of(9, error="ThrottlingException")
        + minute_of(9, error="ThrottlingException", start=T + timedelta(minutes=1))
    )
    notified.evaluate()
    assert alerts(Kind.THROTTLING) == []


def test_a_disabled_rule_judges_nothing(notified):
    AlertRule.objects.update_or_create(kind=Kind.THROTTLING, defaults={"enabled": False, "config": {}})
    AlertRule.objects.update_or_create(kind=Kind.QUOTA_HEADROOM, defaults={"enabled": False, "config": {}})
    ingest(minute_of(600, error="ThrottlingException"))
    notified.evaluate()
    assert Alert.objects.filter(kind__in=(Kind.THROTTLING, Kind.QUOTA_HEADROOM)).count() == 0
