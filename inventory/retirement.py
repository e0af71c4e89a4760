""" "Safe to delete?": a verdict per customer managed key, with the evidence it rests on.

A read over what the inventory, the reference reader and the CloudTrail rollups already hold; it
calls no AWS API itself. The verdicts, with the thresholds in settings:

    in-use            a successful cryptographic call in the last KMSDASH_RETIREMENT_IN_USE_DAYS days
    recently-used     the last one older than that, but inside the look-back window
                      (KMSDASH_RETIREMENT_WINDOW_DAYS, default 90)
    no-recent-use     none in the window, but something still stands in the way: a resource names
                      the key, a service could not be checked, kmsdash's CloudTrail data does not
                      reach back over the whole window, or the key is younger than the window
    safe-to-schedule  none of that

Last use is the later of the rollups' last successful cryptographic call (never raw events) and
GetKeyLastUsage's answer, which the inventory reads (paced under its 5 requests/s quota) for keys
CloudTrail does not already show in use. Grants, aliases, multi-Region replicas, the policy's
deletion waiting-period condition and the monthly saving are evidence: they explain, they do not
decide.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Max, Min
from django.utils import timezone

from audits.models import DailyRollup, OperationDay
from costs.estimate import KeyFacts
from costs.prices import prices

from . import policy as pol
from .models import Key, KeyReference, ReferenceCheck
from .references import SERVICES
from .services import DELETED, USAGE_OPERATIONS

IN_USE = "in-use"
RECENTLY_USED = "recently-used"
NO_RECENT_USE = "no-recent-use"
SAFE_TO_SCHEDULE = "safe-to-schedule"
VERDICTS = (IN_USE, RECENTLY_USED, NO_RECENT_USE, SAFE_TO_SCHEDULE)

PENDING_WINDOW_CONDITION = "kms:schedulekeydeletionpendingwindowindays"
GONE_STATES = (DELETED,)
CENTS = Decimal("0.01")


@dataclass
class Verdict:
    key: str
    verdict: str
    evidence: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "verdict": self.verdict, "evidence": self.evidence}


def window_days() -> int:
    return int(settings.KMSDASH_RETIREMENT_WINDOW_DAYS)


def in_use_days() -> int:
    return int(settings.KMSDASH_RETIREMENT_IN_USE_DAYS)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def deletion_protection(policy: str) -> dict[str, Any]:
    """Statements of the key policy that condition kms:ScheduleKeyDeletion's waiting period."""
    found = []
    for statement in pol.statements(policy):
        for operator, conditions in statement.conditions.items():
            if not isinstance(conditions, dict):
                continue
            for name, value in conditions.items():
                if str(name).lower() == PENDING_WINDOW_CONDITION:
                    found.append(
                        {"sid": statement.sid, "effect": statement.effect, "operator": operator, "value": value}
                    )
    return {"protected": bool(found), "condition": "kms:ScheduleKeyDeletionPendingWindowInDays", "statements": found}


def _last_cloudtrail_uses(arns: list[str]) -> dict[str, tuple[datetime, str]]:
    """Key ARN -> (time, operation) of its last successful cryptographic call in the rollups."""
    last: dict[str, tuple[datetime, str]] = {}
    rows = (
        DailyRollup.objects.filter(key__in=arns, error_code="", operation__in=USAGE_OPERATIONS, own=False)
        .values("key", "operation")
        .annotate(last=Max("last_seen"))
        .order_by()
    )
    for row in rows:
        if row["key"] not in last or row["last"] > last[row["key"]][0]:
            last[row["key"]] = (row["last"], row["operation"])
    return last


def _cloudtrail_since(scopes: set[tuple[str, str]]) -> dict[tuple[str, str], date | None]:
    """(account, region) -> the first day kmsdash holds CloudTrail data for (None: no data)."""
    return {
        (account, region): OperationDay.objects.filter(account_id=account, region=region).aggregate(first=Min("day"))[
            "first"
        ]
        for account, region in scopes
    }


def _replicas(key: Key, known: dict[str, Key]) -> dict[str, Any]:
    if not key.multi_region:
        return {"type": "", "replicas": []}
    replicas = []
    for arn in key.replica_arns or []:
        replica = known.get(arn)
        replicas.append(
            {
                "arn": arn,
                "region": arn.split(":")[3] if arn.count(":") >= 5 else "",
                "state": replica.key_state if replica else "unknown (region not inventoried)",
                "deletion_date": _iso(replica.deletion_date) if replica else None,
            }
        )
    info: dict[str, Any] = {"type": key.multi_region_type, "primary": key.primary_arn, "replicas": replicas}
    if key.multi_region_type == "PRIMARY":
        remaining = [r for r in replicas if r["state"] not in GONE_STATES]
        if remaining:
            dates = [r["deletion_date"] for r in remaining]
            latest = max(dates) if dates and all(dates) else None
            info["deletion_clock"] = (
                f"Scheduling puts this primary in PendingReplicaDeletion: its waiting period starts only once "
                f"its last replica is deleted ({len(remaining)} left"
                + (f", the last on {latest[:10]})" if latest else ", not all of them scheduled)")
            )
        else:
            info["deletion_clock"] = "No replica left: the waiting period starts when the deletion is scheduled."
    return info


def verdicts(keys: list[Key] | None = None, *, now: datetime | None = None) -> list[Verdict]:
    """The verdict of each given key (default: every customer managed key not yet deleted)."""
    now = now or timezone.now()
    if keys is None:
        keys = list(
            Key.objects.filter(key_manager="CUSTOMER").exclude(key_state=DELETED).prefetch_related("grants", "aliases")
        )
    arns = [k.arn for k in keys]
    last_ct = _last_cloudtrail_uses(arns)
    scopes = {(k.account_id, k.region) for k in keys}
    since = _cloudtrail_since(scopes)
    references: dict[str, list[KeyReference]] = defaultdict(list)
    for ref in KeyReference.objects.filter(key__in=arns):
        references[ref.key].append(ref)
    checks: dict[tuple[str, str], dict[str, ReferenceCheck]] = defaultdict(dict)
    for check in ReferenceCheck.objects.filter(account_id__in={a for a, _ in scopes}):
        checks[(check.account_id, check.region)][check.service] = check
    partner_arns = {arn for k in keys for arn in (k.replica_arns or [])}
    known = {k.arn: k for k in Key.objects.filter(arn__in=partner_arns)}
    table = prices()
    return [
        _verdict(
            key,
            now,
            last_ct.get(key.arn),
            since.get((key.account_id, key.region)),
            references[key.arn],
            checks[(key.account_id, key.region)],
            known,
            table,
        )
        for key in sorted(keys, key=lambda k: k.arn)
    ]


def verdict(key: Key, *, now: datetime | None = None) -> Verdict:
    return verdicts([key], now=now)[0]


def _verdict(
    key: Key,
    now: datetime,
    cloudtrail_last: tuple[datetime, str] | None,
    data_since: date | None,
    references: list[KeyReference],
    checks: dict[str, ReferenceCheck],
    known: dict[str, Key],
    table: dict[str, Decimal],
) -> Verdict:
    window, recent = window_days(), in_use_days()
    window_start = now - timedelta(days=window)
    api_last = key.last_used_at
    candidates = [t for t in (cloudtrail_last[0] if cloudtrail_last else None, api_last) if t]
    last = max(candidates) if candidates else None

    reasons: list[str] = []
    if last is not None and last >= now - timedelta(days=recent):
        result = IN_USE
        reasons.append(f"Used successfully in the last {recent} days.")
    elif last is not None and last >= window_start:
        result = RECENTLY_USED
        reasons.append(f"Used successfully in the last {window} days, not in the last {recent}.")
    else:
        blockers = []
        if references:
            blockers.append(f"{len(references)} resource(s) name the key as their encryption key.")
        not_checked = [s for s in SERVICES if s not in checks or checks[s].status != ReferenceCheck.Status.CHECKED]
        if not_checked:
            blockers.append(f"Not checked for resources naming the key: {', '.join(not_checked)}.")
        if data_since is None:
            blockers.append("kmsdash holds no CloudTrail data for this account and region.")
        elif data_since > window_start.date():
            held = (now.date() - data_since).days
            blockers.append(
                f"kmsdash's CloudTrail data for this account and region starts {data_since.isoformat()} "
                f"({held} days): shorter than the {window}-day window, so no use in the window cannot be shown."
            )
        if key.creation_date and key.creation_date > window_start:
            blockers.append(f"Created {key.creation_date:%Y-%m-%d}: younger than the {window}-day window.")
        reasons = [f"No successful cryptographic call in the last {window} days.", *blockers]
        result = NO_RECENT_USE if blockers else SAFE_TO_SCHEDULE

    grants = [
        {
            "grant_id": g.grant_id,
            "name": g.name,
            "grantee_principal": g.grantee_principal,
            "operations": g.operations,
        }
        for g in key.grants.all()
    ]
    evidence: dict[str, Any] = {
        "reasons": reasons,
        "key_state": key.key_state,
        "deletion_date": _iso(key.deletion_date),
        "created": _iso(key.creation_date),
        "window_days": window,
        "in_use_days": recent,
        "last_use": {
            "latest": _iso(last),
            "cloudtrail": {
                "at": _iso(cloudtrail_last[0]) if cloudtrail_last else None,
                "operation": cloudtrail_last[1] if cloudtrail_last else None,
            },
            "get_key_last_usage": {
                "at": _iso(api_last),
                "operation": key.last_used_operation or None,
                "tracking_start": _iso(key.usage_tracking_start),
            },
        },
        "cloudtrail_data_since": data_since.isoformat() if data_since else None,
        "grants": grants,
        "aliases": sorted(a.name for a in key.aliases.all()),
        "multi_region": _replicas(key, known),
        "references": {
            "resources": [
                {
                    "service": r.service,
                    "type": r.resource_type,
                    "resource": r.resource,
                    "key_setting": r.key_ref,
                    "seen": _iso(r.last_seen_at),
                }
                for r in sorted(references, key=lambda r: (r.service, r.resource))
            ],
            "checked": [s for s in SERVICES if s in checks and checks[s].status == ReferenceCheck.Status.CHECKED],
            "not_checked": [
                {"service": s, "reason": checks[s].reason if s in checks else "never read"}
                for s in SERVICES
                if s not in checks or checks[s].status != ReferenceCheck.Status.CHECKED
            ],
        },
        "deletion_protection": deletion_protection(key.policy),
        "monthly_saving": str(KeyFacts.from_key(key).monthly_charge(table).quantize(CENTS)),
    }
    return Verdict(key.arn, result, evidence)
