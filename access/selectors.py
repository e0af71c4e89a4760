"""Reads of the stored IAM snapshots, for the analysis and the pages."""

from __future__ import annotations

from datetime import timedelta

from .models import AuthorizationSnapshot, IamRun


def latest_snapshot(account_id: str) -> AuthorizationSnapshot | None:
    return AuthorizationSnapshot.objects.filter(account_id=account_id).order_by("-version").first()


def authorization_details(account_id: str) -> dict | None:
    """The account's latest GetAccountAuthorizationDetails, every page merged, in AWS's response
    shape (UserDetailList, GroupDetailList, RoleDetailList, Policies) with policy documents as
    dicts (a document boto3 could not decode stays a string); None when never read."""
    snapshot = latest_snapshot(account_id)
    return snapshot.details if snapshot is not None else None


def service_control_policies(account_id: str) -> list | None:
    """The SCPs over the account: [{Id, Name, Content (dict), TargetId, TargetType}], one entry per
    attachment (the account itself, each OU above it, the root: an action must be allowed at every
    level); [] when none apply (the management account); None when they could not be read."""
    snapshot = latest_snapshot(account_id)
    return snapshot.scps if snapshot is not None else None


def scps_note(account_id: str) -> str:
    """Why SCPs were not evaluated for the account ('' when they were)."""
    snapshot = latest_snapshot(account_id)
    if snapshot is None:
        return "IAM has not been read for this account."
    return snapshot.scps_note


def accounts() -> list[str]:
    """Accounts with a stored snapshot."""
    return sorted(set(AuthorizationSnapshot.objects.values_list("account_id", flat=True)))


def latest_runs(limit: int = 20) -> list[IamRun]:
    return list(IamRun.objects.all()[:limit])


# --- Access analysis results (access/analysis.py) --------------------------------------------
USED_DAYS = 90  # "used": a successful call of one of the actions in this many days (the rollups)


def _calls(keys: list[str], since) -> dict[str, dict[str, set[str]]]:
    """key -> principal -> operations called successfully since `since`, from the daily rollups."""
    from audits.models import DailyRollup

    found: dict[str, dict[str, set[str]]] = {}
    for start in range(0, len(keys), 500):  # bounded IN lists
        rows = (
            DailyRollup.objects.filter(key__in=keys[start : start + 500], day__gte=since, error_code="")
            .values_list("key", "principal", "operation")
            .distinct()
        )
        for key, principal, operation in rows:
            found.setdefault(key, {}).setdefault(principal, set()).add(operation)
    return found


def _used(principal: str, actions: list[str], calls: dict[str, set[str]]) -> bool:
    """Whether the principal made any of the calls. An account root stands for the account's
    principals, "*" for anyone."""
    from .catalog import event_name
    from .policy import account_of

    operations = {event_name(a) for a in actions}
    if principal == "*":
        callers = list(calls)
    elif principal.endswith(":root"):
        account = account_of(principal)
        callers = [p for p in calls if p == account or account_of(p) == account]
    else:
        callers = [principal]
    return any(operations & calls.get(p, set()) for p in callers)


def calls_since(days: int = USED_DAYS):
    from django.utils import timezone

    return timezone.now().date() - timedelta(days=days)


def key_access(key_arn: str | None = None, principal_arn: str | None = None) -> dict:
    """The access analysis in key_access's shape: every analysed key (or one) with every principal
    that can use it (or one principal's), how, conditionally or not, and whether it used it in the
    last USED_DAYS days; the escalation paths; and per key what the analysis could not read."""
    from .models import AccessEntry, EscalationPath, KeyAnalysis

    analyses = KeyAnalysis.objects.all()
    if key_arn:
        analyses = analyses.filter(key_arn=key_arn)
    entries = AccessEntry.objects.filter(analysis__in=analyses)
    escalations = EscalationPath.objects.filter(analysis__in=analyses)
    if principal_arn:
        entries = entries.filter(principal=principal_arn)
        escalations = escalations.filter(principal=principal_arn)
    by_key: dict[str, list[AccessEntry]] = {}
    for entry in entries.order_by("key_arn", "principal", "id"):
        by_key.setdefault(entry.key_arn, []).append(entry)
    analysed = list(analyses.order_by("key_arn"))
    calls = _calls([a.key_arn for a in analysed], calls_since())
    keys = []
    for analysis in analysed:
        rows = by_key.get(analysis.key_arn, [])
        if principal_arn and not rows:
            continue
        unreadable = [u for u in analysis.unreadable if not principal_arn or u.get("principal") in ("", principal_arn)]
        keys.append(
            {
                "key": analysis.key_arn,
                "access": [
                    {
                        "principal": e.principal,
                        "actions": e.actions,
                        "conditional": e.conditional,
                        "conditions": e.conditions,
                        "via": e.via,
                        "used": _used(e.principal, e.actions, calls.get(analysis.key_arn, {})),
                        "notes": e.notes,
                    }
                    for e in rows
                ],
                "unreadable": unreadable,
            }
        )
    return {
        "keys": keys,
        "escalations": [
            {"principal": p.principal, "key": p.key_arn, "gains": p.gains, "path": p.path}
            for p in escalations.order_by("key_arn", "principal", "id")
        ],
    }


def analysable_accounts() -> list[str]:
    """Accounts whose keys the analysis covers: those the inventory read keys from."""
    from inventory.models import Key

    return sorted(set(Key.objects.values_list("account_id", flat=True).distinct()))
