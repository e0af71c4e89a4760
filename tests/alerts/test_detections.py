"""Each detection, positive and negative, with the look-alikes that must stay silent.

Every test loads its history and its incident through the ingestion path and evaluates once,
so the history itself is judged too (as on a first import) and must not alert."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest

from alerts.models import Alert, AlertRule, Kind
from audits import synthetic
from audits.cloudtrail import CRITICAL_EVENT_NAMES, ROUTINE, critical_class
from inventory.models import Finding
from kmsdash import aws
from tests.alerts.support import APP, FOREIGN, K1, K2, A, T, hourly, ingest, rec, role

pytestmark = pytest.mark.django_db


def kinds() -> list[str]:
    return sorted(Alert.objects.values_list("kind", flat=True))


def only(kind: str) -> Alert:
    (alert,) = Alert.objects.filter(kind=kind)
    return alert


# -- critical-event ------------------------------------------------------------------------------


def test_every_critical_event_has_a_class_and_service_grants_are_routine():
    assert all(critical_class(name) for name in CRITICAL_EVENT_NAMES)
    assert critical_class("CreateGrant", "ec2.amazonaws.com") == ROUTINE
    assert critical_class("RetireGrant", "AWS Internal") == ROUTINE
    assert critical_class("CreateGrant", "") == "access-changing"
    assert critical_class("ScheduleKeyDeletion", "AWS Internal") == "destructive"
    assert critical_class("Decrypt") == ""


def test_a_successful_key_deletion_alerts_once_with_its_event_time_and_a_failed_one_does_not(notified):
    when = T + timedelta(minutes=3)
    ingest(
        [
            rec("ScheduleKeyDeletion", when=when, request_parameters={"keyId": K1, "pendingWindowInDays": 7}),
            rec("ScheduleKeyDeletion", key=K2, error="AccessDeniedException"),
            rec("Decrypt"),
        ]
    )
    notified.evaluate()
    alert = only(Kind.CRITICAL_EVENT)
    assert (alert.key, alert.severity, alert.count, alert.first_event, alert.subject) == (
        K1,
        "critical",
        1,
        when,
        "ScheduleKeyDeletion",
    )
    assert alert.principal == APP
    assert notified.events() == ["opened"]
    sent = notified.calls[0][1]
    assert sent["url"] == f"/alerts/{alert.pk}/" and sent["kind"] == "critical-event" and sent["principal"] == APP
    assert sent["error_code"] is None


def test_a_key_deletion_named_only_in_request_parameters_alerts_too(notified):
    record = rec("ScheduleKeyDeletion", request_parameters={"keyId": K1.rsplit("/", 1)[1]})
    del record["resources"]  # Panther's "missing resources" case
    ingest([record])
    notified.evaluate()
    assert only(Kind.CRITICAL_EVENT).key == K1


def test_routine_grants_made_by_aws_services_do_not_alert_even_when_grants_are_in_the_set(notified):
    # update_or_create: a transactional test before this one on the same worker flushes the migration's rule rows.
    AlertRule.objects.update_or_create(
        kind=Kind.CRITICAL_EVENT, defaults={"config": {"operations": {"CreateGrant": "medium"}}}
    )
    ebs = role("app", invoked_by="ec2.amazonaws.com")
    ingest(
        [rec("CreateGrant", identity=ebs, when=T + timedelta(minutes=i)) for i in range(30)]
        + [rec("RetireGrant", identity=ebs)]
    )
    notified.evaluate()
    assert kinds() == []
    ingest([rec("CreateGrant", identity=synthetic.identity_user(A, "mallory"), when=T + timedelta(hours=1))])
    notified.evaluate()
    assert only(Kind.CRITICAL_EVENT).subject == "CreateGrant"


def test_deleting_a_customer_alias_alerts_and_an_aws_managed_alias_does_not(notified):
    ingest(
        [
            rec("DeleteAlias", request_parameters={"aliasName": "alias/aws/ebs"}),
            rec("DeleteAlias", key=K2, request_parameters={"aliasName": "alias/payments"}),
        ]
    )
    notified.evaluate()
    assert only(Kind.CRITICAL_EVENT).key == K2


def test_repeats_of_a_critical_event_grow_one_alert(notified):
    ingest([rec("DisableKey", when=T + timedelta(minutes=i)) for i in range(3)])
    notified.evaluate()
    ingest([rec("DisableKey", when=T + timedelta(hours=2))])
    notified.evaluate()
    alert = only(Kind.CRITICAL_EVENT)
    assert (alert.count, alert.first_event, alert.last_event) == (4, T, T + timedelta(hours=2))
    assert notified.events() == ["opened"]


# -- key-exposed -----------------------------------------------------------------------------------


def policy(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ROOT = {
    "Sid": "root",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{A}:root"},
    "Action": "kms:*",
    "Resource": "*",
}
PUBLIC = {"Sid": "open", "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}


def test_a_policy_open_to_everyone_alerts_critical_and_one_pinned_to_the_organisation_does_not(notified):
    pinned = {**PUBLIC, "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc123def4"}}}
    ingest(
        [
            rec(
                "PutKeyPolicy",
                request_parameters={"keyId": K1, "policyName": "default", "policy": policy(ROOT, PUBLIC)},
            ),
            rec(
                "PutKeyPolicy",
                key=K2,
                request_parameters={"keyId": K2, "policyName": "default", "policy": policy(ROOT, pinned)},
            ),
        ]
    )
    notified.evaluate()
    alert = only(Kind.KEY_EXPOSED)
    assert (alert.key, alert.severity) == (K1, "critical")
    assert alert.evidence["statements"][0]["Sid"] == "open"


def test_a_policy_or_grant_for_an_unknown_account_alerts_high_and_one_for_a_known_account_does_not(notified):
    foreign = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{FOREIGN}:root"},
        "Action": "kms:Decrypt",
        "Resource": "*",
    }
    ingest(
        [
            rec(
                "CreateKey",
                key=None,
                request_parameters={"policy": policy(ROOT, foreign)},
                response_elements={"keyMetadata": {"arn": K1, "keyId": K1.rsplit("/", 1)[1]}},
            ),
            rec(
                "CreateGrant",
                key=K2,
                request_parameters={
                    "keyId": K2,
                    "granteePrincipal": f"arn:aws:iam::{A}:role/x",
                    "operations": ["Decrypt"],
                },
            ),
        ]
    )
    notified.evaluate()
    alert = only(Kind.KEY_EXPOSED)
    assert (alert.key, alert.severity) == (K1, "high") and FOREIGN in alert.summary
    ingest(
        [
            rec(
                "CreateGrant",
                key=K2,
                request_parameters={
                    "keyId": K2,
                    "granteePrincipal": f"arn:aws:iam::{FOREIGN}:role/x",
                    "operations": ["Decrypt"],
                },
            )
        ]
    )
    notified.evaluate()
    assert Alert.objects.get(kind=Kind.KEY_EXPOSED, key=K2).severity == "high"


# -- failure-burst -------------------------------------------------------------------------------------


def steady_failures(**fields) -> list[dict]:
    """Two AccessDenied failures every hour of the day for 15 days: a steady low failure rate."""
    return hourly(per_hour=2, hours=range(24), error="AccessDenied", **fields)


def test_a_steady_low_failure_rate_stays_silent(notified):
    ingest(steady_failures() + [rec(when=T + timedelta(minutes=i), error="AccessDenied") for i in range(4)])
    notified.evaluate()
    assert kinds() == []


def test_a_burst_far_above_the_principals_own_failure_rate_alerts_with_every_failure_counted(notified):
    burst = [rec(when=T + timedelta(seconds=10 * i), error="AccessDenied") for i in range(300)]
    ingest(steady_failures() + burst)
    notified.evaluate()
    alert = only(Kind.FAILURE_BURST)
    assert (alert.principal, alert.key, alert.error_code, alert.count) == (APP, K1, "AccessDenied", 300)
    assert alert.baseline == 2 and alert.threshold == 20 and alert.observed == 300
    assert (alert.first_event, alert.last_event) == (T, T + timedelta(seconds=2990))


def test_a_storm_of_ten_thousand_failures_is_one_alert_counting_ten_thousand(notified):
    # Throttling per account and region is its own kind (tests/alerts/test_quota_alerts.py).
    AlertRule.objects.update_or_create(kind=Kind.THROTTLING, defaults={"enabled": False, "config": {}})
    ingest(hourly(per_hour=1))  # the principal's history, without failures
    storm = [rec(when=T + timedelta(seconds=i // 3), error="ThrottlingException") for i in range(10_000)]
    ingest(storm[:4000])
    notified.evaluate()
    ingest(storm[4000:])
    notified.evaluate()
    alert = only(Kind.FAILURE_BURST)
    assert alert.count == 10_000 and Alert.objects.count() == 1
    # Opened, then escalated: severity already critical at 4,000 (ten times the threshold), the count not tenfold.
    assert notified.events() == ["opened"]


def test_kmsdash_s_own_calls_from_its_central_account_never_alert(notified):
    # kmsdash reads every key from its own account with its user agent: a principal of another
    # account, new on each key, denied now and then. Its own calls, not an incident.
    ours = {
        "identity": synthetic.identity_role(FOREIGN, "kmsdash-reader", "kmsdash"),
        "user_agent": f"Boto3/1.35.0 {aws.USER_AGENT}",
    }
    ingest(hourly(per_hour=1))
    ingest([rec("DescribeKey", when=T + timedelta(seconds=i), **ours) for i in range(10)])
    ingest([rec("GetKeyPolicy", when=T + timedelta(seconds=i), error="AccessDenied", **ours) for i in range(500)])
    notified.evaluate()
    assert kinds() == []
    # The same calls from that principal without kmsdash's user agent are a new principal on the
    # key (not yet a failure burst: it has no week of history).
    ours["user_agent"] = "Boto3/1.35.0"
    ingest(
        [
            rec("GetKeyPolicy", when=T + timedelta(minutes=5, seconds=i), error="AccessDenied", **ours)
            for i in range(500)
        ]
    )
    notified.evaluate()
    assert kinds() == [Kind.NEW_PRINCIPAL]


def test_failures_of_a_principal_without_a_week_of_history_do_not_alert(notified):
    ingest(hourly(days=3, per_hour=1) + [rec(when=T + timedelta(seconds=i), error="AccessDenied") for i in range(500)])
    notified.evaluate()
    assert kinds() == []


# -- volume-spike ---------------------------------------------------------------------------------


def test_a_key_steadily_ten_times_busier_stays_silent_and_a_spike_on_a_quiet_key_alerts(notified):
    busy = hourly(per_hour=30, key=K2, hours=range(8, 18))
    quiet = hourly(per_hour=3, key=K1, hours=range(8, 18))
    today = [rec(key=K2, when=T + timedelta(seconds=10 * i)) for i in range(33)]
    spike = [rec(key=K1, when=T + timedelta(hours=1, seconds=5 * i)) for i in range(400)]
    ingest(busy + quiet + today + spike)
    notified.evaluate()
    alert = only(Kind.VOLUME_SPIKE)
    assert (alert.key, alert.count, alert.baseline) == (K1, 400, 3)
    assert alert.first_event == T + timedelta(hours=1)


def test_a_nightly_batch_at_two_in_the_morning_is_no_spike(notified):
    nightly = hourly(per_hour=200, hours=[2], identity=role("batch"))
    tonight = [rec(identity=role("batch"), when=T.replace(hour=2) + timedelta(seconds=i)) for i in range(220)]
    ingest(hourly(per_hour=2) + nightly + tonight)
    notified.evaluate()
    assert kinds() == []


# -- after-hours-unusual ----------------------------------------------------------------------------


def test_a_nightly_batch_role_stays_silent_and_a_day_role_calling_at_night_alerts(notified, settings):
    settings.KMSDASH_BUSINESS_HOURS = (synthetic_time(6), synthetic_time(23))
    batch = role("batch")
    history = hourly(per_hour=2, hours=range(8, 18)) + hourly(per_hour=5, hours=[2], identity=batch)
    night = T.replace(hour=3)
    incident = [rec(when=night + timedelta(minutes=i)) for i in range(5)]
    tonight = [rec(identity=batch, when=T.replace(hour=2) + timedelta(minutes=i)) for i in range(5)]
    ingest(history + incident + tonight)
    notified.evaluate()
    alert = only(Kind.AFTER_HOURS_UNUSUAL)
    assert (alert.principal, alert.count, alert.first_event) == (APP, 5, night)


def synthetic_time(hour: int):
    from datetime import time

    return time(hour, 0)


# -- new-principal -----------------------------------------------------------------------------------


def test_a_principal_of_another_account_a_user_and_root_alert_and_a_new_own_role_does_not(notified):
    outsider = synthetic.identity_role(FOREIGN, "thief", "t-1")
    ingest(
        hourly(per_hour=2)
        + [
            rec(identity=outsider),
            rec(identity=synthetic.identity_user(A, "bob"), when=T + timedelta(minutes=1)),
            rec(identity=synthetic.identity_root(A), when=T + timedelta(minutes=2)),
            rec(identity=role("brand-new-service-role"), when=T + timedelta(minutes=3)),
        ]
    )
    notified.evaluate()
    found = {a.principal: a.severity for a in Alert.objects.filter(kind=Kind.NEW_PRINCIPAL)}
    assert found == {
        f"arn:aws:iam::{FOREIGN}:role/thief": "high",
        f"arn:aws:iam::{A}:user/bob": "medium",
        f"arn:aws:iam::{A}:root": "high",
    }


def test_a_principal_seen_in_the_baseline_is_not_new_and_a_key_without_history_is_not_judged(notified):
    user = synthetic.identity_user(A, "bob")
    ingest(
        hourly(per_hour=2)
        + hourly(per_hour=1, hours=[9], identity=user)
        + [rec(identity=user)]
        + [rec(key=K2, identity=user)]
    )  # K2 has no history
    notified.evaluate()
    assert kinds() == []


# -- finding -----------------------------------------------------------------------------------------


def make_finding(severity: str, fingerprint: str) -> Finding:
    return Finding.objects.create(
        fingerprint=fingerprint,
        kind=Finding.Kind.POLICY_PUBLIC,
        severity=severity,
        key=K1,
        account_id=A,
        region="us-east-1",
        summary="Key policy allows any AWS principal",
        first_seen_at=T,
        last_seen_at=T,
    )


def test_a_new_high_finding_opens_an_alert_naming_its_kind_and_a_low_one_does_not(notified):
    make_finding("critical", "a" * 64)
    make_finding("low", "b" * 64)
    notified.evaluate()
    alert = only(Kind.FINDING)
    assert alert.summary.startswith("policy-public:") and alert.severity == "critical"
    notified.evaluate()
    assert Alert.objects.count() == 1  # the same finding is not alerted again


def test_escalation_paths_alert_once_per_principal_counting_its_keys(notified):
    def escalation(principal: str, key: str) -> None:
        Finding.objects.create(
            fingerprint=hashlib.sha256(f"{principal}|{key}".encode()).hexdigest(),
            kind=Finding.Kind.ESCALATION_PATH,
            severity="high",
            key=key,
            subject=principal,
            account_id=A,
            region="us-east-1",
            summary=f"{principal} cannot use the key but could give itself 3 rights on it",
            first_seen_at=T,
            last_seen_at=T,
        )

    granter, editor = f"arn:aws:iam::{A}:role/granter", f"arn:aws:iam::{A}:role/editor"
    for key in (K1, K2, K1 + "-3"):
        escalation(granter, key)
    escalation(editor, K1)
    notified.evaluate()
    alerts = {a.principal: a for a in Alert.objects.filter(kind=Kind.FINDING)}
    assert set(alerts) == {granter, editor}
    assert (alerts[granter].count, alerts[granter].key, alerts[editor].count) == (3, "", 1)
