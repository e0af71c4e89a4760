"""What a critical key event changed, in one line, from its CloudTrail record (for the critical page).

Everything here is read from the record as the caller sent it, so it is attacker-controlled text: the
templates escape it like any other value. Only strings are used; anything else in a field is ignored.
"""

from __future__ import annotations

from typing import Any

from inventory import policy as pol

# The operations whose request can let another account, or anyone, use a key: a grant's grantee,
# a key policy. Their description needs the configured accounts.
EXPOSING_OPERATIONS = ("PutKeyPolicy", "CreateKey", "CreateGrant")


def _text(mapping: Any, name: str) -> str:
    value = mapping.get(name) if isinstance(mapping, dict) else None
    return value if isinstance(value, str) else ""


def describe(event_name: str, record: dict | None, known_accounts: set[str]) -> str:
    """A short account of the change, or '' when the record says nothing more than the operation."""
    if not isinstance(record, dict):
        return ""
    request = record.get("requestParameters")
    response = record.get("responseElements")
    if event_name == "CreateGrant":
        grantee = _text(request, "granteePrincipal")
        operations = request.get("operations") if isinstance(request, dict) else None
        ops = ", ".join(o for o in operations if isinstance(o, str)) if isinstance(operations, list) else ""
        text = f"grants {ops or 'operations'} to {grantee or 'an unnamed grantee'}"
        account = pol.account_of(grantee)
        if account and account not in known_accounts:
            text += f" (account {account} is not configured here)"
        return text
    if event_name in ("RetireGrant", "RevokeGrant"):
        grant = _text(request, "grantId")
        return f"grant {grant}" if grant else ""
    if event_name == "ScheduleKeyDeletion":
        days = request.get("pendingWindowInDays") if isinstance(request, dict) else None
        when = _text(response, "deletionDate")
        text = f"deletion after {days} days" if isinstance(days, int) and not isinstance(days, bool) else "deletion"
        return f"{text}, on {when}" if when else text
    if event_name in ("CreateAlias", "UpdateAlias"):
        alias, target = _text(request, "aliasName"), _text(request, "targetKeyId")
        return f"{alias} now points to {target}" if alias and target else alias
    if event_name == "DeleteAlias":
        return _text(request, "aliasName")
    if event_name in ("PutKeyPolicy", "CreateKey"):
        policy = _text(request, "policy")
        if not policy:
            return ""
        if pol.public_statements(policy):
            return 'the policy lets in any AWS principal ("*") without an account or organisation condition'
        key_account = _text(record.get("userIdentity"), "accountId") or _text(record, "recipientAccountId")
        foreign = sorted(pol.foreign_account_grants(policy, known_accounts | {key_account}))
        if foreign:
            return (
                f"the policy lets in account{'s' if len(foreign) > 1 else ''} {', '.join(foreign)}, not configured here"
            )
        return "the policy lets in no other account"
    if event_name in ("EnableKeyRotation",):
        days = request.get("rotationPeriodInDays") if isinstance(request, dict) else None
        return f"every {days} days" if isinstance(days, int) and not isinstance(days, bool) else ""
    if event_name == "ReplicateKey":
        region = _text(request, "replicaRegion")
        return f"replica in {region}" if region else ""
    if event_name == "UpdatePrimaryRegion":
        region = _text(request, "primaryRegion")
        return f"primary now in {region}" if region else ""
    return ""
