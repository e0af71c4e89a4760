"""Key policy and trail selector analysis: pure functions over the JSON AWS returns.

Nothing here touches the database or the network, so every rule is tested on plain documents.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

ACCOUNT_ARN_RE = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):")
ACCOUNT_ID_RE = re.compile(r"^\d{12}$")

# Condition keys that pin a statement to known accounts, organisations or resources.
RESTRICTING_CONDITION_KEYS = frozenset(
    {
        "aws:principalorgid",
        "aws:principalorgpaths",
        "aws:principalaccount",
        "aws:principalarn",
        "aws:sourceaccount",
        "aws:sourcearn",
        "aws:sourceowner",
        "aws:sourceorgid",
        "aws:sourceorgpaths",
        "aws:sourcevpce",
        "aws:sourcevpc",
        "aws:userid",
        "kms:calleraccount",
    }
)

# The calls that use a key (as opposed to administering it).
USAGE_ACTIONS = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:Sign",
    "kms:Verify",
    "kms:GenerateMac",
    "kms:VerifyMac",
    "kms:DeriveSharedSecret",
    "kms:CreateGrant",
)


@dataclass(frozen=True)
class Principal:
    kind: str  # "*", "AWS", "Service", "Federated", "CanonicalUser"
    value: str

    @property
    def account(self) -> str:
        return account_of(self.value) if self.kind == "AWS" else ""

    @property
    def is_everyone(self) -> bool:
        return self.value == "*" and self.kind in ("*", "AWS")

    def __str__(self) -> str:
        return self.value if self.kind in ("*", "AWS") else f"{self.kind}:{self.value}"


@dataclass
class Statement:
    index: int
    raw: dict[str, Any]
    effect: str
    principals: list[Principal] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    conditions: dict[str, Any] = field(default_factory=dict)

    @property
    def allows(self) -> bool:
        return self.effect == "Allow"

    @property
    def sid(self) -> str:
        sid = self.raw.get("Sid")
        return sid if isinstance(sid, str) else ""

    def text(self) -> str:
        return json.dumps(self.raw, indent=2, sort_keys=False)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def account_of(principal: str) -> str:
    """The account of an AWS principal (bare id or IAM/STS ARN), else ''."""
    if ACCOUNT_ID_RE.match(principal):
        return principal
    match = ACCOUNT_ARN_RE.match(principal)
    return match.group(1) if match else ""


def parse_principals(value: Any) -> list[Principal]:
    if value is None:
        return []
    if isinstance(value, str):
        return [Principal("*" if value == "*" else "AWS", value)]
    found: list[Principal] = []
    if isinstance(value, dict):
        for kind, members in value.items():
            for member in _as_list(members):
                if isinstance(member, str):
                    found.append(Principal(str(kind), member))
    return found


def statements(policy: str | dict | None) -> list[Statement]:
    """The statements of a policy document; [] for an empty or unreadable one."""
    if not policy:
        return []
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except ValueError:
            return []
    if not isinstance(policy, dict):
        return []
    parsed: list[Statement] = []
    for index, raw in enumerate(_as_list(policy.get("Statement"))):
        if not isinstance(raw, dict):
            continue
        conditions = raw.get("Condition")
        parsed.append(
            Statement(
                index=index,
                raw=raw,
                effect=str(raw.get("Effect", "")),
                principals=parse_principals(raw.get("Principal")),
                actions=[a for a in _as_list(raw.get("Action")) if isinstance(a, str)],
                conditions=conditions if isinstance(conditions, dict) else {},
            )
        )
    return parsed


def restricting_conditions(statement: Statement) -> list[str]:
    """Condition keys that restrict who can use the statement to known accounts or resources.

    Negated operators (StringNotEquals, ...) and bare "*" values restrict nothing.
    """
    found: list[str] = []
    for operator, block in statement.conditions.items():
        if not isinstance(block, dict) or "Not" in str(operator) or str(operator).startswith("Null"):
            continue
        for key, values in block.items():
            values = [v for v in _as_list(values) if isinstance(v, str)]
            if str(key).lower() in RESTRICTING_CONDITION_KEYS and values and "*" not in values:
                found.append(str(key))
    return found


def action_matches(pattern: str, action: str) -> bool:
    return fnmatchcase(action.lower(), pattern.lower())


def grants_all_actions(statement: Statement) -> bool:
    return any(a.lower() in ("*", "kms:*") for a in statement.actions)


def grants_usage(statement: Statement) -> bool:
    return any(action_matches(p, a) for p in statement.actions for a in USAGE_ACTIONS)


def is_root_of(principal: Principal, account: str) -> bool:
    return principal.kind == "AWS" and principal.value in (account, f"arn:aws:iam::{account}:root")


def public_statements(policy: str | None) -> list[Statement]:
    """Allow statements open to Principal "*" without a condition pinning them to known accounts."""
    return [
        s
        for s in statements(policy)
        if s.allows and any(p.is_everyone for p in s.principals) and not restricting_conditions(s)
    ]


def wildcard_action_grants(policy: str | None, key_account: str) -> list[tuple[Statement, list[Principal]]]:
    """Allow statements granting kms:* (or *) to principals other than the key account's root."""
    found = []
    for s in statements(policy):
        if s.allows and grants_all_actions(s):
            others = [p for p in s.principals if not is_root_of(p, key_account) and p.kind in ("*", "AWS")]
            if others:
                found.append((s, others))
    return found


def foreign_account_grants(policy: str | None, known_accounts: set[str]) -> dict[str, list[Statement]]:
    """Accounts outside `known_accounts` named as principals of Allow statements -> their statements."""
    found: dict[str, list[Statement]] = {}
    for s in statements(policy):
        if not s.allows:
            continue
        for p in s.principals:
            account = p.account
            if account and account not in known_accounts:
                if s not in found.setdefault(account, []):
                    found[account].append(s)
    return found


def who_can_use(policy: str | None) -> list[tuple[str, Statement]]:
    """Principals that an Allow statement lets use the key, with the statement that does."""
    found: list[tuple[str, Statement]] = []
    for s in statements(policy):
        if s.allows and grants_usage(s):
            for p in s.principals:
                found.append((str(p), s))
    return found


# --- CloudTrail event selectors --------------------------------------------------------------
KMS_SOURCE = "kms.amazonaws.com"


def trail_kms_gaps(event_selectors: list[dict] | None, advanced_event_selectors: list[dict] | None) -> list[str]:
    """Why a trail does not record KMS usage ([] when it records all KMS management events).

    KMS usage (Encrypt, Decrypt, ...) is read-only management events from kms.amazonaws.com: a
    trail sees it only with a management-event selector that includes reads and does not
    exclude the KMS event source.
    """
    reasons: list[str] = []
    if advanced_event_selectors:
        for selector in advanced_event_selectors:
            fields = {str(f.get("Field")): f for f in selector.get("FieldSelectors") or [] if isinstance(f, dict)}
            category = fields.get("eventCategory")
            if not category or "Management" not in (category.get("Equals") or []):
                continue
            source = fields.get("eventSource") or {}
            read_only = fields.get("readOnly") or {}
            if KMS_SOURCE in (source.get("NotEquals") or []):
                reasons.append("excludes kms.amazonaws.com")
            elif source.get("Equals") and KMS_SOURCE not in source["Equals"]:
                reasons.append("management events limited to other sources")
            elif "false" in (read_only.get("Equals") or []) or "true" in (read_only.get("NotEquals") or []):
                reasons.append("logs only write events")
            else:
                return []
        return sorted(set(reasons)) or ["no management events"]
    if not event_selectors:
        # No selectors at all is a trail's default: every management event.
        return []
    for selector in event_selectors:
        if not selector.get("IncludeManagementEvents", True):
            continue
        if KMS_SOURCE in (selector.get("ExcludeManagementEventSources") or []):
            reasons.append("excludes kms.amazonaws.com")
        elif selector.get("ReadWriteType", "All") == "WriteOnly":
            reasons.append("logs only write events")
        else:
            return []
    return sorted(set(reasons)) or ["no management events"]
