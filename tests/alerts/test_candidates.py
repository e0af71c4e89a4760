"""Alert candidates (audits/candidates.py): what ingestion writes for evaluation equals what a scan of
the same events gives, duplicates add nothing, and a crash between ingestion and evaluation (or in
the middle of an evaluation) neither loses nor double counts anything."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, timedelta

import pytest

import alerts.services
from alerts.models import Alert, AlertRule, Evaluation, Kind
from audits import candidates, synthetic
from audits.cloudtrail import CRITICAL_EVENT_NAMES
from audits.models import AlertCandidate, Event, QuotaMinute
from kmsdash import aws
from tests.alerts.support import FOREIGN, K1, K2, A, T, ingest, rec, role

pytestmark = pytest.mark.django_db

OWN = f"arn:aws:iam::{A}:role/kmsdash-reader"
OWN_ROLE = role("kmsdash-reader")
MARKED = f"Boto3/1.35.0 {aws.USER_AGENT_MARK}"
GROUP_DIMS = ("account_id", "region", "key", "principal", "principal_type", "caller_account_id", "error_code")


def mixed_batch() -> list[dict]:
    """Generator traffic over two days (failures, after-hours calls, users, other accounts, grants,
    key deletions...), the request fields the detections read, kmsdash's own calls, failed
    key-management calls and a busy minute."""
    records = list(synthetic.generate_records(1_500, seed=7, start=T - timedelta(days=2), days=2))
    policy = json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}]})
    records += [
        rec("PutKeyPolicy", request_parameters={"keyId": K1, "policyName": "default", "policy": policy}),
        rec("CreateKey", request_parameters={"policy": policy, "keyUsage": "ENCRYPT_DECRYPT"}),
        rec(
            "CreateGrant",
            request_parameters={
                "keyId": K1,
                "granteePrincipal": f"arn:aws:iam::{FOREIGN}:root",
                "operations": ["Decrypt"],
            },
        ),
        rec("UpdateAlias", request_parameters={"aliasName": "alias/app", "targetKeyId": K2}),
        rec("DeleteAlias", request_parameters={"aliasName": "alias/aws/ebs"}),
        rec("ScheduleKeyDeletion", key=K2, error="AccessDeniedException"),
        rec("PutKeyPolicy", identity=OWN_ROLE, user_agent=MARKED, request_parameters={"keyId": K1, "policy": policy}),
        *[
            rec("Decrypt", identity=OWN_ROLE, user_agent=MARKED, when=T + timedelta(minutes=5, seconds=i))
            for i in range(40)
        ],
        *[rec("Decrypt", when=T + timedelta(minutes=9, seconds=i % 60)) for i in range(90)],
        *[rec("Encrypt", when=T + timedelta(minutes=9), error="ThrottlingException") for _ in range(3)],
    ]
    return records


def scanned_groups() -> Counter:
    """The candidate groups as a scan of the events gives them: per hour and dimension, own calls out."""
    found: Counter = Counter()
    for event in Event.objects.filter(own=False):
        hour = event.event_time.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        found[(hour, event.recipient_account_id, *(getattr(event, d) for d in GROUP_DIMS[1:]), event.after_hours)] += 1
    return found


def written_groups() -> Counter:
    found: Counter = Counter()
    for c in AlertCandidate.objects.filter(kind=AlertCandidate.Kind.GROUP):
        found[(c.at, *(getattr(c, d) for d in GROUP_DIMS), c.after_hours)] += c.n
    return found


def scanned_calls() -> dict[int, tuple[str, str]]:
    out = {}
    for event in Event.objects.filter(event_name__in=CRITICAL_EVENT_NAMES, error_code="", own=False):
        detail = candidates.detail_of(event.raw_record()) if candidates.wants_detail(event) else ""
        out[event.pk] = (event.event_name, detail)
    return out


def written_calls() -> dict[int | None, tuple[str, str]]:
    rows = AlertCandidate.objects.filter(kind=AlertCandidate.Kind.CALL).values_list("event_pk", "event_name", "detail")
    pks = [pk for pk, _, _ in rows]
    assert len(pks) == len(set(pks)), "a call kept twice"
    return {pk: (name, detail) for pk, name, detail in rows}


def scanned_minutes(floors: dict[str, float]) -> set[tuple]:
    touched = {
        (e.event_time.replace(second=0, microsecond=0), e.recipient_account_id, e.region, e.quota_class)
        for e in Event.objects.exclude(quota_class="").filter(own=False)
    }
    return {
        (q.minute, q.account_id, q.region, q.quota_class)
        for q in QuotaMinute.objects.all()
        if (q.minute, q.account_id, q.region, q.quota_class) in touched
        and candidates.is_quota_candidate(q.quota_class, q.calls, q.throttled, floors)
    }


def written_minutes() -> set[tuple]:
    return set(
        AlertCandidate.objects.filter(kind=AlertCandidate.Kind.MINUTE).values_list(
            "at", "account_id", "region", "quota_class"
        )
    )


def test_candidates_written_equal_a_scan_of_the_same_events_and_duplicates_add_nothing(settings):
    settings.KMSDASH_SELF_PRINCIPALS = [OWN]
    settings.KMSDASH_KMS_QUOTAS = {("*", "*", "symmetric"): 10.0}  # a minute of 60 calls is a candidate
    records = mixed_batch()
    ingest(records[: len(records) // 2])
    ingest(records[len(records) // 3 :])  # overlaps the first batch: a sixth are duplicates
    ingest(records[:200])  # duplicates only
    assert Event.objects.count() == len({r["eventID"] for r in records})
    assert Event.objects.filter(own=True).count() == 41

    groups = written_groups()
    assert groups == scanned_groups()
    assert sum(groups.values()) == Event.objects.filter(own=False).count()
    calls = written_calls()
    assert calls == scanned_calls()
    assert {name for name, detail in calls.values() if detail} >= {"PutKeyPolicy", "CreateKey", "CreateGrant"}
    grantees = [json.loads(d).get("granteePrincipal") for n, d in calls.values() if n == "CreateGrant" and d]
    assert f"arn:aws:iam::{FOREIGN}:root" in grantees
    minutes = written_minutes()
    assert minutes == scanned_minutes(candidates.quota_floors())
    assert (T + timedelta(minutes=9), A, "us-east-1", "symmetric") in minutes

    # The Python rules (SQLite, and the migration that fills candidates for events not yet judged)
    # give the same rows for the same events.
    events = [
        (e.pk, e, candidates.detail_of(e.raw_record()) if candidates.wants_detail(e) else "")
        for e in Event.objects.all()
    ]
    totals = QuotaMinute.objects.values_list(
        "minute", "account_id", "region", "quota_class", "calls", "throttled", "first_seen", "last_seen"
    )
    built = candidates.build(events, totals, candidates.quota_floors())
    built_groups: Counter = Counter()
    for c in built:
        if c.kind == AlertCandidate.Kind.GROUP:
            built_groups[(c.at, *(getattr(c, d) for d in GROUP_DIMS), c.after_hours)] += c.n
    assert built_groups == groups
    assert {c.event_pk: (c.event_name, c.detail) for c in built if c.kind == AlertCandidate.Kind.CALL} == calls
    assert {(c.at, c.account_id, c.region, c.quota_class) for c in built if c.kind == AlertCandidate.Kind.MINUTE} == (
        minutes
    )


def test_an_evaluation_that_crashed_after_ingestion_misses_nothing_and_counts_nothing_twice(notified, monkeypatch):
    ingest([rec("ScheduleKeyDeletion", key=K1), rec("DisableKey", key=K2)])

    def crash(*args, **kwargs):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(alerts.services, "_apply", crash)
    with pytest.raises(RuntimeError):
        notified.evaluate()
    assert Alert.objects.count() == 0 and Evaluation.objects.get().candidate_id == 0
    monkeypatch.undo()

    # More lands before the next evaluation; then one evaluation that dies after its first chunks.
    ingest([rec("DisableKey", key=K2, when=T + timedelta(minutes=1)), rec("PutKeyPolicy", key=K1)])
    applied = defaultdict(int)
    real_apply = alerts.services._apply

    def apply_then_crash(detections, *args, **kwargs):
        applied["chunks"] += 1
        if applied["chunks"] == 3:
            raise RuntimeError("worker killed")
        return real_apply(detections, *args, **kwargs)

    monkeypatch.setattr(alerts.services, "_apply", apply_then_crash)
    with pytest.raises(RuntimeError):
        notified.evaluate(chunk=1)  # one candidate per transaction
    monkeypatch.undo()
    assert 0 < Evaluation.objects.get().candidate_id < AlertCandidate.objects.order_by("-id").first().id

    notified.evaluate()
    notified.evaluate()
    counts = dict(Alert.objects.filter(kind=Kind.CRITICAL_EVENT).values_list("subject", "count"))
    assert counts == {"ScheduleKeyDeletion": 1, "DisableKey": 2, "PutKeyPolicy": 1}
    assert not AlertCandidate.objects.exists()  # consumed with the watermark's moves
    assert Evaluation.objects.get().event_id == Event.objects.order_by("-id").first().id


def test_candidates_not_judged_yet_move_with_their_events_when_an_alias_is_reattributed(notified):
    from audits.services import reattribute_alias

    alias_arn = f"arn:aws:kms:us-east-1:{A}:alias/app"
    ingest([rec("DisableKey", key=alias_arn)])
    assert set(AlertCandidate.objects.values_list("key", flat=True)) == {alias_arn}
    reattribute_alias(A, "us-east-1", alias_name="alias/app", alias_arn=alias_arn, key_arn=K1)
    assert set(AlertCandidate.objects.values_list("key", flat=True)) == {K1}
    notified.evaluate()
    assert Alert.objects.get(kind=Kind.CRITICAL_EVENT).key == K1


def test_the_critical_event_rule_accepts_only_operations_ingestion_keeps_for_evaluation():
    from alerts.admin import AlertRuleForm

    rule, _ = AlertRule.objects.get_or_create(kind=Kind.CRITICAL_EVENT, defaults={"config": {}})

    def form(operations):
        return AlertRuleForm(
            data={"kind": Kind.CRITICAL_EVENT, "enabled": True, "config": json.dumps({"operations": operations})},
            instance=rule,
        )

    assert form({"DisableKey": "high", "CreateKey": "low"}).is_valid()
    refused = form({"DisableKey": "high", "Decrypt": "low"})
    assert not refused.is_valid() and "Decrypt" in str(refused.errors)


def test_a_chunk_holding_only_key_management_calls_is_judged(notified):
    ingest([rec("ScheduleKeyDeletion", key=K1), rec("DisableKey", key=K2), rec("Decrypt")])
    notified.evaluate(chunk=1)  # one candidate per transaction: the calls' chunks hold no event group
    assert sorted(Alert.objects.values_list("subject", flat=True)) == ["DisableKey", "ScheduleKeyDeletion"]
