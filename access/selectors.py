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

USE_DAYS = USED_DAYS


def action_group(action: str) -> str:
    """The display name of a key action's group (access.catalog: encrypt, decrypt, ..., management, read)."""
    from .catalog import GROUP_LABELS, group_of

    return GROUP_LABELS[group_of(action)]


def group_names() -> list[str]:
    from .catalog import GROUP_LABELS

    return list(GROUP_LABELS.values())


def analysis_results(key_arn: str | None = None, principal_arn: str | None = None) -> dict | None:
    """The stored access analysis in the `key_access` shape ({"keys": [...], "escalations": [...]}),
    of one key or one principal when given, or None when it has not run."""
    from .models import KeyAnalysis

    if not KeyAnalysis.objects.exists():
        return None
    return key_access(key_arn=key_arn, principal_arn=principal_arn)


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


def _used_operations(*, key: str | None = None, principal: str | None = None) -> set[tuple[str, str, str]]:
    """(key, principal, kms:Operation) with a successful call in the last 90 days, from the rollups."""
    rows = DailyRollup.objects.filter(day__gte=timezone.now().date() - timedelta(days=USE_DAYS), error_code="")
    if key is not None:
        rows = rows.filter(key=key)
    if principal is not None:
        rows = rows.filter(principal=principal)
    return {(k, p, f"kms:{op}") for k, p, op in rows.values_list("key", "principal", "operation").distinct()}


def who_can(key_arn: str, account_id: str) -> dict:
    """The key's "who can" panel: per action group, every principal with the path that gives it, its
    conditions, and whether CloudTrail shows it using that group in the last 90 days."""
    results = analysis_results(key_arn=key_arn)
    context: dict = {
        "analysed": results is not None,
        "scps_note": scps_note(account_id) if account_id else "",
        "iam_read": latest_snapshot(account_id) is not None if account_id else False,
        "use_days": USE_DAYS,
    }
    if results is None:
        return context
    entry = next((k for k in results.get("keys") or [] if k.get("key") == key_arn), None)
    from .catalog import event_name

    used = {(p, op) for _, p, op in _used_operations(key=key_arn)}
    groups: dict[str, list[dict]] = {name: [] for name in group_names()}
    for access in (entry or {}).get("access") or []:
        principal = str(access.get("principal", ""))
        by_group: dict[str, list[str]] = {}
        for action in access.get("actions") or []:
            by_group.setdefault(action_group(str(action)), []).append(str(action))
        for group, actions in by_group.items():
            groups[group].append(
                {
                    "principal": principal,
                    "actions": sorted(actions),
                    "conditional": bool(access.get("conditional")),
                    "conditions": _conditions(access.get("conditions") or {}),
                    "via": access.get("via") or [],
                    "used": any((principal, f"kms:{event_name(a)}") in used for a in actions),
                }
            )
    context["groups"] = [(name, sorted(rows, key=lambda r: r["principal"])) for name, rows in groups.items()]
    context["known"] = entry is not None
    context["escalations"] = [e for e in results.get("escalations") or [] if e.get("key") == key_arn]
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

    results = analysis_results(principal_arn=arn) or {}
    can = []
    for entry in results.get("keys") or []:
        for access in entry.get("access") or []:
            if access.get("principal") == arn:
                groups = sorted({action_group(str(a)) for a in access.get("actions") or []}, key=group_names().index)
                can.append(
                    {
                        "key": entry.get("key", ""),
                        "groups": groups,
                        "actions": sorted(str(a) for a in access.get("actions") or []),
                        "conditional": bool(access.get("conditional")),
                        "conditions": _conditions(access.get("conditions") or {}),
                        "via": access.get("via") or [],
                        "used": bool(access.get("used")),
                    }
                )
    since = timezone.now().date() - timedelta(days=USE_DAYS)
    does = list(
        DailyRollup.objects.filter(principal=arn, day__gte=since)
        .values("key", "operation")
        .annotate(calls=Sum("count"), failed=Sum("count", filter=~Q(error_code="")), last_day=Max("day"))
        .order_by("key", "operation")
    )
    escalations = [e for e in results.get("escalations") or [] if e.get("principal") == arn]
    findings = list(Finding.objects.open().filter(subject=arn).order_by("-last_seen_at")[:200])
    entity = _iam_entity(arn)
    if not (can or does or escalations or findings or entity):
        return None
    kind, record = entity if entity else ("", {})
    return {
        "arn": arn,
        "kind": kind,
        "record": record,
        "policies": _policies_of(kind, record),
        "analysed": bool(results),
        "can": sorted(can, key=lambda r: r["key"]),
        "does": does,
        "escalations": escalations,
        "findings": findings,
        "use_days": USE_DAYS,
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
