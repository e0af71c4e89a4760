"""Reads of the stored IAM snapshots, for the analysis and the pages."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Max, Q, Sum
from django.utils import timezone

from audits.models import DailyRollup

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


def resource_control_policies(account_id: str) -> list | None:
    """The RCPs over the account (they limit what anyone may do to its resources, its keys
    included), in service_control_policies' shape; None when they could not be read."""
    snapshot = latest_snapshot(account_id)
    return snapshot.rcps if snapshot is not None else None


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
    """key -> principal -> operations called successfully since `since`, from the daily rollups
    (kmsdash's own calls left out, as everywhere)."""
    found: dict[str, dict[str, set[str]]] = {}
    for start in range(0, len(keys), 500):  # bounded IN lists
        rows = (
            DailyRollup.objects.filter(key__in=keys[start : start + 500], day__gte=since, error_code="", own=False)
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


# --- The pages: the key's "who can" panel and the principal page ------------------------------


def _conditions(conditions: dict) -> list[dict]:
    """{"StringEquals": {"kms:ViaService": "s3..."}} -> rows of operator, key and values, to show."""
    rows = []
    for operator, pairs in sorted((conditions or {}).items()):
        if not isinstance(pairs, dict):
            rows.append({"operator": str(operator), "key": "", "values": [str(pairs)]})
            continue
        for name, values in sorted(pairs.items()):
            listed = values if isinstance(values, list) else [values]
            rows.append({"operator": str(operator), "key": str(name), "values": [str(v) for v in listed]})
    return rows


def who_can(key_arn: str, account_id: str) -> dict:
    """The key's "who can" panel: per action group, every principal with the path that gives it, its
    conditions, and whether the rollups show it making that group's calls in the last USED_DAYS days."""
    from .catalog import GROUP_LABELS, group_actions
    from .models import KeyAnalysis

    analysis = KeyAnalysis.objects.filter(key_arn=key_arn).first()
    context: dict = {
        "analysed": analysis is not None,
        "iam_read": latest_snapshot(account_id) is not None if account_id else False,
        "scps_note": analysis.scps_note if analysis is not None else scps_note(account_id) if account_id else "",
        "use_days": USED_DAYS,
    }
    if analysis is None:
        return context
    results = key_access(key_arn=key_arn)
    entry: dict = next((k for k in results["keys"] if k["key"] == key_arn), {"access": [], "unreadable": []})
    calls = _calls([key_arn], calls_since()).get(key_arn, {})
    groups: dict[str, list[dict]] = {name: [] for name in GROUP_LABELS}
    for access in entry["access"]:
        for group, actions in group_actions(access["actions"]).items():
            groups[group].append(
                {
                    "principal": access["principal"],
                    "actions": actions,
                    "conditional": access["conditional"],
                    "conditions": _conditions(access["conditions"]),
                    "via": access["via"],
                    "notes": access.get("notes") or [],
                    "used": _used(access["principal"], actions, calls),
                }
            )
    context["groups"] = [(GROUP_LABELS[name], rows) for name, rows in groups.items()]
    context["computed_at"] = analysis.computed_at
    context["unreadable"] = entry.get("unreadable") or []
    context["escalations"] = results["escalations"]
    return context


def _iam_entity(arn: str) -> tuple[str, dict] | None:
    """(kind, IAM's own record) of a user, group or role ARN from the stored snapshots."""
    account = arn.split(":")[4] if arn.count(":") >= 5 else ""
    details = authorization_details(account) if account else None
    for name, kind in (("UserDetailList", "user"), ("RoleDetailList", "role"), ("GroupDetailList", "group")):
        for item in (details or {}).get(name) or []:
            if item.get("Arn") == arn:
                return kind, item
    return None


def principal_page(arn: str) -> dict | None:
    """What the principal can use, what it does use, its escalation paths and findings; None when
    kmsdash knows nothing of it."""
    from inventory.models import Finding

    from .catalog import GROUP_LABELS, group_actions
    from .models import KeyAnalysis

    results = key_access(principal_arn=arn)
    can = [
        {
            "key": entry["key"],
            "groups": [GROUP_LABELS[g] for g in group_actions(access["actions"])],
            "actions": sorted(access["actions"]),
            "conditional": access["conditional"],
            "conditions": _conditions(access["conditions"]),
            "via": access["via"],
            "notes": access.get("notes") or [],
            "used": access["used"],
        }
        for entry in results["keys"]
        for access in entry["access"]
    ]
    unreadable = [
        {"key": entry["key"], **u}
        for entry in results["keys"]
        for u in entry.get("unreadable") or []
        if u.get("principal")
    ]
    does = list(
        DailyRollup.objects.filter(principal=arn, day__gte=calls_since(), own=False)
        .values("key", "operation")
        .annotate(calls=Sum("count"), failed=Sum("count", filter=~Q(error_code="")), last_day=Max("day"))
        .order_by("key", "operation")
    )
    findings = list(Finding.objects.open().filter(subject=arn).order_by("-last_seen_at")[:200])
    entity = _iam_entity(arn)
    if not (can or does or results["escalations"] or findings or entity):
        return None
    kind, record = entity if entity else ("", {})
    return {
        "arn": arn,
        "kind": kind,
        "record": record,
        "policies": _policies_of(kind, record),
        "analysed": KeyAnalysis.objects.exists(),
        "can": can,
        "unreadable": unreadable,
        "does": does,
        "escalations": results["escalations"],
        "findings": findings,
        "use_days": USED_DAYS,
    }


def _policies_of(kind: str, record: dict) -> list[dict]:
    """The policies that apply to a user, group or role, by how they apply (names only)."""
    inline_field = {"user": "UserPolicyList", "group": "GroupPolicyList", "role": "RolePolicyList"}.get(kind)
    rows = [{"how": "inline", "name": p.get("PolicyName", "")} for p in record.get(inline_field or "", []) or []]
    rows += [{"how": "managed", "name": p.get("PolicyArn", "")} for p in record.get("AttachedManagedPolicies") or []]
    boundary = (record.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
    if boundary:
        rows.append({"how": "permissions boundary", "name": boundary})
    rows += [{"how": "group", "name": g} for g in record.get("GroupList") or []]
    return rows
