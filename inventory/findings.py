"""Findings: what the inventory and the CloudTrail rollups say is risky, recomputed as a whole.

`recompute()` derives every finding that holds now and reconciles them with the stored ones by
fingerprint (kind + key or trail + detail): new ones are opened, held ones refreshed, and ones
that no longer hold are resolved (kept, with resolved_at). Usage facts come from DailyRollup;
only the encryption-context check reads events, bounded in days and rows.

AWS managed keys are listed but never judged: their policies, rotation and lifetime belong to AWS.
"""

from __future__ import annotations

import calendar
import fnmatch
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Min, Q, Sum
from django.utils import timezone

from audits.cloudtrail import CONTEXT_OPERATIONS, USAGE_OPERATIONS
from audits.models import DailyRollup, Event, Source
from costs.estimate import KeyFacts
from costs.prices import prices
from kmsdash.locks import run_lock

from . import policy as pol
from .models import EncryptionContextRule, Finding, Key, KeyStateVersion, Trail
from .services import DELETED

K = Finding.Kind
S = Finding.Severity

DISABLED_ERRORS = ("DisabledException", "KMSInvalidStateException")

IN_USE_DAYS = 30
UNUSED_DAYS = 90
NEW_PRINCIPAL_DAYS = 7
CROSS_ACCOUNT_USE_DAYS = 90
TOP_PRINCIPALS = 20


def context_days() -> int:
    return int(settings.KMSDASH_EC_RULE_DAYS)


def context_max_events() -> int:
    return int(settings.KMSDASH_EC_RULE_MAX_EVENTS)


@dataclass
class Fact:
    kind: str
    severity: str
    summary: str
    key: str = ""
    subject: str = ""
    account_id: str = ""
    region: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.kind}\n{self.key}\n{self.subject}".encode()).hexdigest()


def known_accounts() -> set[str]:
    """The configured accounts, and those the inventory read keys from (default-chain runs)."""
    accounts = set(Source.objects.values_list("account_id", flat=True))
    accounts.update(Key.objects.values_list("account_id", flat=True).distinct())
    return accounts


def _statement_evidence(statements: list[pol.Statement]) -> list[dict[str, Any]]:
    return [{"index": s.index, "sid": s.sid, "statement": s.raw} for s in statements]


def _principal_usage(rows) -> list[dict[str, Any]]:
    return [
        {"principal": r["principal"], "calls": r["calls"], "last_seen": r["last"].isoformat()}
        for r in rows.values("principal")
        .annotate(calls=Sum("count"), last=Max("last_seen"))
        .order_by("-calls")[:TOP_PRINCIPALS]
    ]


def key_facts(key: Key, accounts: set[str], now: datetime) -> Iterator[Fact]:
    base = {"key": key.arn, "account_id": key.account_id, "region": key.region}
    today = now.date()
    # kmsdash's own calls (its inventory reads every key) are not anyone's use of the key.
    rollups = DailyRollup.objects.filter(key=key.arn, own=False)

    public = pol.public_statements(key.policy)
    if public:
        yield Fact(
            K.POLICY_PUBLIC,
            S.CRITICAL,
            'Key policy allows any AWS principal ("*") without an account or organisation condition',
            evidence={"statements": _statement_evidence(public)},
            **base,
        )

    wildcard = pol.wildcard_action_grants(key.policy, key.account_id)
    if wildcard:
        principals = sorted({str(p) for _, ps in wildcard for p in ps})
        yield Fact(
            K.POLICY_WILDCARD_ACTIONS,
            S.HIGH,
            "Key policy grants kms:* to principals other than the account root",
            evidence={"statements": _statement_evidence([s for s, _ in wildcard]), "principals": principals},
            **base,
        )

    for account, statements in sorted(pol.foreign_account_grants(key.policy, accounts).items()):
        used = rollups.filter(
            Q(principal__contains=f":{account}:") | Q(principal=account),
            day__gte=today - timedelta(days=CROSS_ACCOUNT_USE_DAYS),
        )
        usage = _principal_usage(used)
        yield Fact(
            K.POLICY_CROSS_ACCOUNT,
            S.MEDIUM,
            f"Key policy lets account {account}, which is not a configured account, use the key"
            + (" — and CloudTrail shows it doing so" if usage else ""),
            subject=account,
            evidence={
                "account": account,
                "used": bool(usage),
                "usage": usage,
                "statements": _statement_evidence(statements),
            },
            **base,
        )

    for grant in key.grants.all():
        account = pol.account_of(grant.grantee_principal)
        if account and account not in accounts:
            yield Fact(
                K.GRANT_CROSS_ACCOUNT,
                S.MEDIUM,
                f"Grant {grant.name or grant.grant_id} gives account {account} use of the key",
                subject=grant.grant_id,
                evidence={
                    "grant": {
                        "grant_id": grant.grant_id,
                        "name": grant.name,
                        "grantee_principal": grant.grantee_principal,
                        "retiring_principal": grant.retiring_principal,
                        "operations": grant.operations,
                        "constraints": grant.constraints,
                    },
                    "account": account,
                },
                **base,
            )

    if (
        key.rotation_enabled is False
        and key.key_spec == "SYMMETRIC_DEFAULT"
        and key.origin == "AWS_KMS"
        and key.multi_region_type != "REPLICA"
        and key.key_state not in ("PendingDeletion", "PendingReplicaDeletion")
    ):
        yield Fact(
            K.ROTATION_DISABLED,
            S.LOW,
            "Automatic rotation is off for a symmetric key with KMS key material",
            evidence={"rotation_enabled": False, "key_spec": key.key_spec, "origin": key.origin},
            **base,
        )

    recent = rollups.filter(day__gte=today - timedelta(days=IN_USE_DAYS))
    if key.key_state == "PendingDeletion":
        usage = _principal_usage(recent.filter(error_code="", operation__in=USAGE_OPERATIONS))
        if usage:
            yield Fact(
                K.PENDING_DELETION_IN_USE,
                S.HIGH,
                f"Key scheduled for deletion on {key.deletion_date:%Y-%m-%d} was used successfully in the last {IN_USE_DAYS} days"
                if key.deletion_date
                else f"Key scheduled for deletion was used successfully in the last {IN_USE_DAYS} days",
                evidence={
                    "deletion_date": key.deletion_date.isoformat() if key.deletion_date else None,
                    "principals": usage,
                },
                **base,
            )

    if key.key_state == "Disabled":
        callers = _principal_usage(recent.filter(error_code__in=DISABLED_ERRORS))
        if callers:
            yield Fact(
                K.DISABLED_KEY_IN_USE,
                S.MEDIUM,
                f"Disabled key is still being called (failures in the last {IN_USE_DAYS} days)",
                evidence={"principals": callers},
                **base,
            )

    if (
        key.key_state in ("Enabled", "Disabled")
        and key.creation_date
        and key.creation_date <= now - timedelta(days=UNUSED_DAYS)
    ):
        last_rollup = rollups.filter(error_code="", operation__in=USAGE_OPERATIONS).aggregate(last=Max("last_seen"))[
            "last"
        ]
        last = max((t for t in (last_rollup, key.last_used_at) if t), default=None)
        if last is None or last <= now - timedelta(days=UNUSED_DAYS):
            yield Fact(
                K.UNUSED_KEY,
                S.LOW,
                f"Customer managed key not used in {UNUSED_DAYS} days",
                evidence={
                    "last_used": last.isoformat() if last else None,
                    "last_used_cloudtrail": last_rollup.isoformat() if last_rollup else None,
                    "last_used_api": key.last_used_at.isoformat() if key.last_used_at else None,
                    "created": key.creation_date.isoformat(),
                },
                **base,
            )

    # New principals: only against a baseline, i.e. when the key's history starts before the window.
    window_start = today - timedelta(days=NEW_PRINCIPAL_DAYS)
    used = rollups.filter(error_code="").exclude(principal="")
    first_day = used.aggregate(first=Min("day"))["first"]
    if first_day is not None and first_day < window_start:
        for row in (
            used.values("principal")
            .annotate(first=Min("day"), first_seen=Min("first_seen"), calls=Sum("count"))
            .filter(first__gte=window_start)
            .order_by("principal")
        ):
            yield Fact(
                K.NEW_PRINCIPAL,
                S.INFO,
                f"First use of the key by this principal in the last {NEW_PRINCIPAL_DAYS} days",
                subject=row["principal"],
                evidence={
                    "principal": row["principal"],
                    "first_seen": row["first_seen"].isoformat(),
                    "calls": row["calls"],
                },
                **base,
            )


def rules_for(key: Key, aliases: list[str], rules: list[EncryptionContextRule]) -> list[EncryptionContextRule]:
    return [
        r
        for r in rules
        if (not r.key_arn or r.key_arn == key.arn)
        and (not r.account_id or r.account_id == key.account_id)
        and (not r.alias_pattern or any(fnmatch.fnmatchcase(a, r.alias_pattern) for a in aliases))
    ]


def context_violations(context: Any, rule: EncryptionContextRule) -> list[str]:
    """Why an encryption context breaks a rule ([] if it keeps it)."""
    context = context if isinstance(context, dict) else {}
    reasons = [f"missing {name}" for name in rule.required_keys or [] if name not in context]
    for name, allowed in (rule.allowed_values or {}).items():
        if name in context and str(context[name]) not in [str(v) for v in allowed]:
            reasons.append(f"{name} not allowed")
    return reasons


def context_rule_counts(key: Key, rule: EncryptionContextRule, now: datetime) -> dict[str, dict[str, Any]]:
    """principal -> {"calls": n, "reasons": {...}} for this key's violating calls, bounded in days and rows."""
    events = (
        Event.objects.filter(
            key=key.arn,
            own=False,
            event_time__gte=now - timedelta(days=context_days()),
            event_name__in=CONTEXT_OPERATIONS,
        )
        .order_by("-event_time")
        .values_list("principal", "encryption_context")[: context_max_events()]
    )
    found: dict[str, dict[str, Any]] = {}
    for principal, context in events.iterator(chunk_size=5000):
        reasons = context_violations(context, rule)
        if reasons:
            entry = found.setdefault(principal, {"calls": 0, "reasons": defaultdict(int)})
            entry["calls"] += 1
            for reason in reasons:
                entry["reasons"][reason] += 1
    return found


def context_facts(keys: list[Key], aliases: dict[str, list[str]], now: datetime) -> Iterator[Fact]:
    rules = list(EncryptionContextRule.objects.filter(enabled=True))
    if not rules:
        return
    for key in keys:
        for rule in rules_for(key, aliases.get(key.arn, []), rules):
            counts = context_rule_counts(key, rule, now)
            if not counts:
                continue
            by_principal = sorted(
                ({"principal": p, "calls": c["calls"], "reasons": dict(c["reasons"])} for p, c in counts.items()),
                key=lambda row: (-row["calls"], row["principal"]),
            )
            total = sum(row["calls"] for row in by_principal)
            yield Fact(
                K.ENCRYPTION_CONTEXT_VIOLATION,
                S.MEDIUM,
                f"{total} calls in the last {context_days()} days break encryption-context rule {rule.name}",
                key=key.arn,
                subject=f"rule:{rule.pk}",
                account_id=key.account_id,
                region=key.region,
                evidence={
                    "rule": {
                        "id": rule.pk,
                        "name": rule.name,
                        "required_keys": rule.required_keys,
                        "allowed_values": rule.allowed_values,
                    },
                    "calls": total,
                    "by_principal": by_principal[:TOP_PRINCIPALS],
                },
            )


def trail_facts() -> Iterator[Fact]:
    for trail in Trail.objects.all():
        reasons = pol.trail_kms_gaps(trail.event_selectors, trail.advanced_event_selectors)
        if reasons:
            yield Fact(
                K.TRAIL_EXCLUDES_KMS,
                S.HIGH,
                f"Trail {trail.name} does not record KMS usage: {', '.join(reasons)}",
                subject=trail.arn,
                account_id=trail.account_id,
                region=trail.home_region,
                evidence={
                    "reasons": reasons,
                    "source": "PutEventSelectors" if trail.change else "GetEventSelectors",
                    "change": trail.change,
                    "event_selectors": trail.event_selectors,
                    "advanced_event_selectors": trail.advanced_event_selectors,
                },
            )


# --- Key lifecycle ------------------------------------------------------------------------------
MATERIAL_EXPIRING_DAYS = 30
ON_DEMAND_ROTATION_LIMIT = 10  # RotateKeyOnDemand calls AWS allows per key, for its lifetime
ON_DEMAND_ROTATION_WARN = 8
CHURN_DAYS = 30  # created and scheduled for deletion within this many days of each other
CHURN_MONTHS = 12  # months of key creations looked at
PENDING_STATES = ("PendingDeletion", "PendingReplicaDeletion")


def normalised_policy(policy: str) -> Any:
    """A key policy in a form where only meaningful differences remain: keys sorted (by json.dumps
    later), a one-element list the same as its element, and the statement, action, resource and
    principal lists compared as sets (IAM does not read them in order)."""
    try:
        document = json.loads(policy) if policy else None
    except ValueError:
        return policy

    def norm(value: Any, name: str = "") -> Any:
        if isinstance(value, dict):
            return {k: norm(v, k) for k, v in value.items()}
        if isinstance(value, list):
            items = [norm(v, name) for v in value]
            if len(items) == 1:
                return items[0]
            return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
        return value

    return norm(document)


def _statement_set(document: Any) -> set[str]:
    statements = document.get("Statement") if isinstance(document, dict) else None
    if not isinstance(statements, list):
        statements = [statements] if statements is not None else []
    return {json.dumps(s, sort_keys=True) for s in statements}


def replica_drift_facts(keys: list[Key]) -> Iterator[Fact]:
    replicas = {k.arn: k for k in keys if k.multi_region_type == "REPLICA"}
    for primary in keys:
        if primary.multi_region_type != "PRIMARY" or not primary.policy:
            continue
        expected = normalised_policy(primary.policy)
        for arn in primary.replica_arns or []:
            replica = replicas.get(arn)
            if replica is None or not replica.policy:
                continue  # not inventoried (or its policy not readable): nothing to compare
            actual = normalised_policy(replica.policy)
            if json.dumps(actual, sort_keys=True) == json.dumps(expected, sort_keys=True):
                continue
            ours, theirs = _statement_set(expected), _statement_set(actual)
            yield Fact(
                K.REPLICA_POLICY_DRIFT,
                S.MEDIUM,
                f"Key policy of the replica in {replica.region} differs from its primary's in {primary.region}",
                key=primary.arn,
                subject=replica.arn,
                account_id=primary.account_id,
                region=primary.region,
                evidence={
                    "primary": primary.arn,
                    "replica": replica.arn,
                    "only_in_primary": [json.loads(t) for t in sorted(ours - theirs)],
                    "only_in_replica": [json.loads(t) for t in sorted(theirs - ours)],
                },
            )


def material_facts(key: Key, now: datetime) -> Iterator[Fact]:
    if key.origin != "EXTERNAL" or key.valid_to is None or key.key_state in PENDING_STATES:
        return
    base = {"key": key.arn, "account_id": key.account_id, "region": key.region}
    evidence = {"valid_to": key.valid_to.isoformat(), "expiration_model": key.expiration_model, "origin": key.origin}
    if key.valid_to <= now:
        yield Fact(
            K.KEY_MATERIAL_EXPIRED,
            S.HIGH,
            f"Imported key material expired on {key.valid_to:%Y-%m-%d}: the key cannot be used until it is reimported",
            evidence=evidence,
            **base,
        )
    elif key.valid_to <= now + timedelta(days=MATERIAL_EXPIRING_DAYS):
        days = (key.valid_to - now).days
        yield Fact(
            K.KEY_MATERIAL_EXPIRING,
            S.MEDIUM,
            f"Imported key material expires on {key.valid_to:%Y-%m-%d} (in {days} days)",
            evidence={**evidence, "days_left": days},
            **base,
        )


def rotation_budget_facts(key: Key) -> Iterator[Fact]:
    if key.on_demand_rotations >= ON_DEMAND_ROTATION_WARN:
        left = max(0, ON_DEMAND_ROTATION_LIMIT - key.on_demand_rotations)
        yield Fact(
            K.ROTATION_ON_DEMAND_BUDGET,
            S.LOW,
            f"{key.on_demand_rotations} of the {ON_DEMAND_ROTATION_LIMIT} on-demand rotations used ({left} left)",
            key=key.arn,
            account_id=key.account_id,
            region=key.region,
            evidence={"on_demand_rotations": key.on_demand_rotations, "limit": ON_DEMAND_ROTATION_LIMIT, "left": left},
        )


def _scheduled_at(keys: list[Key]) -> dict[str, datetime]:
    """Key ARN -> when its deletion was first scheduled: the first successful ScheduleKeyDeletion in
    the rollups, else when the inventory first saw it pending deletion."""
    arns = [k.arn for k in keys]
    found: dict[str, datetime] = dict(
        DailyRollup.objects.filter(key__in=arns, operation="ScheduleKeyDeletion", error_code="")
        .values_list("key")
        .annotate(first=Min("first_seen"))
        .order_by()
    )
    seen = (
        KeyStateVersion.objects.filter(key__arn__in=arns, key_state__in=PENDING_STATES)
        .values_list("key__arn")
        .annotate(first=Min("first_seen_at"))
        .order_by()
    )
    for arn, first in seen:
        found.setdefault(arn, first)
    return found


def _key_month_cost(key: Key, start: datetime, end: datetime, table: dict[str, Decimal]) -> Decimal:
    """What the key's key-months cost from its creation until its deletion was scheduled (keys
    pending deletion are not billed), day by day with costs' own proration."""
    facts = replace(KeyFacts.from_key(key), key_state="Enabled", creation_date=start)
    total = Decimal(0)
    day = start.date()
    while day < end.date():
        total += facts.key_month_cost(day, table)
        day += timedelta(days=1)
    days_in_month = calendar.monthrange(end.year, end.month)[1]
    hours = Decimal(end.hour) if end.date() > start.date() else Decimal((end - start).seconds // 3600)
    return total + facts.monthly_charge(table) * hours / (24 * days_in_month)


def churn_facts(now: datetime) -> Iterator[Fact]:
    since = now - timedelta(days=31 * CHURN_MONTHS)
    keys = list(Key.objects.filter(key_manager="CUSTOMER", creation_date__gte=since))
    scheduled = _scheduled_at(keys)
    table = prices()
    months: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for key in keys:
        at = scheduled.get(key.arn)
        if key.creation_date is None or at is None or at - key.creation_date > timedelta(days=CHURN_DAYS):
            continue
        months[(key.account_id, f"{key.creation_date:%Y-%m}")].append(
            {
                "key": key.arn,
                "region": key.region,
                "created": key.creation_date.isoformat(),
                "scheduled": at.isoformat(),
                "days": (at - key.creation_date).days,
                "cost": _key_month_cost(key, key.creation_date, at, table),
            }
        )
    for (account, month), rows in sorted(months.items()):
        cost = sum((r["cost"] for r in rows), Decimal(0)).quantize(Decimal("0.01"))
        rows.sort(key=lambda r: r["created"])
        yield Fact(
            K.KEY_CHURN,
            S.INFO,
            f"{len(rows)} key(s) created in {month} were scheduled for deletion within {CHURN_DAYS} days "
            f"(${cost} of key-months)",
            subject=f"{account}:{month}",
            account_id=account,
            evidence={
                "month": month,
                "keys": len(rows),
                "cost": str(cost),
                "churned": [{**r, "cost": str(r["cost"].quantize(Decimal("0.0001")))} for r in rows],
            },
        )


def current_facts(now: datetime | None = None) -> list[Fact]:
    now = now or timezone.now()
    accounts = known_accounts()
    keys = list(
        Key.objects.filter(key_manager="CUSTOMER").exclude(key_state=DELETED).prefetch_related("grants", "aliases")
    )
    aliases = {k.arn: [a.name for a in k.aliases.all()] for k in keys}
    facts: list[Fact] = []
    for key in keys:
        facts.extend(key_facts(key, accounts, now))
        facts.extend(material_facts(key, now))
        facts.extend(rotation_budget_facts(key))
    facts.extend(replica_drift_facts(keys))
    facts.extend(churn_facts(now))
    facts.extend(context_facts(keys, aliases, now))
    facts.extend(trail_facts())
    # Who can use the keys (access/findings.py), from the stored access analysis and IAM snapshot.
    from access.findings import access_facts

    facts.extend(access_facts(now))
    return facts


LOCK_NAME = "inventory:findings"


def recompute(now: datetime | None = None) -> dict[str, int] | None:
    """Bring the stored findings in line with what holds now, under the findings' run lock. Returns
    counts of what changed, or None, having changed nothing, when another recompute holds the lock
    (it may have read before the caller's changes committed: the caller decides whether to retry)."""
    with run_lock(LOCK_NAME) as acquired:
        return _recompute(now) if acquired else None


def _recompute(now: datetime | None) -> dict[str, int]:
    now = now or timezone.now()
    facts = {fact.fingerprint: fact for fact in current_facts(now)}
    counts = {"opened": 0, "held": 0, "resolved": 0}
    with transaction.atomic():
        stored = {f.fingerprint: f for f in Finding.objects.select_for_update().filter(resolved_at__isnull=True)}
        returning = [fp for fp in facts if fp not in stored]
        for start in range(0, len(returning), 500):  # bounded IN lists
            for f in Finding.objects.select_for_update().filter(fingerprint__in=returning[start : start + 500]):
                stored[f.fingerprint] = f
        for fingerprint, fact in facts.items():
            finding = stored.get(fingerprint)
            values = {
                "kind": fact.kind,
                "severity": fact.severity,
                "key": fact.key,
                "subject": fact.subject,
                "account_id": fact.account_id,
                "region": fact.region,
                "summary": fact.summary[:1024],
                "evidence": fact.evidence,
                "last_seen_at": now,
                "resolved_at": None,
            }
            if finding is None:
                Finding.objects.create(fingerprint=fingerprint, first_seen_at=now, **values)
                counts["opened"] += 1
            else:
                reopened = finding.resolved_at is not None
                for name, value in values.items():
                    setattr(finding, name, value)
                finding.save()
                counts["opened" if reopened else "held"] += 1
        for fingerprint, finding in stored.items():
            if fingerprint not in facts and finding.resolved_at is None:
                finding.resolved_at = now
                finding.save(update_fields=["resolved_at"])
                counts["resolved"] += 1
    return counts
