"""Who can use a KMS key, and how: AWS's documented authorization logic over AWS-shaped documents.

Pure: no Django, no boto3, no network. The inputs are what AWS returns (GetAccountAuthorizationDetails
per account, the key policy, ListGrants, the SCPs over each account); the outputs are plain data.

The logic (AWS KMS developer guide, "Determining access to a KMS key"; IAM user guide, "Policy
evaluation logic"):

- The key policy is the primary authority. A statement naming a principal of the key's account
  gives it the right by itself. A statement naming an account (its root, or its bare id) hands the
  decision to that account's identity policies: the key policy AND an identity policy must allow.
  A principal of another account always needs both.
- Identity-policy rights are limited by the principal's permissions boundary (when it has one) and
  by the SCPs over its account (when they were read: at every level of the organisation some SCP
  must allow). A key-policy right naming an IAM user is not limited by the user's boundary; one
  naming a role is (its sessions are what call KMS).
- A grant gives its operations to its grantee, with its constraints, whatever the key policy says.
- An explicit Deny anywhere (key policy, identity policy, boundary, SCP) wins over every Allow.
- Role trust policies are read with the same rules (the role is the resource, sts:AssumeRole the
  action), so "who can assume this role" is one more evaluation.

Conditions are shown, never guessed: a right that needs a condition is conditional and carries the
condition verbatim. The one exception is a condition on who the caller is (kms:CallerAccount,
aws:PrincipalAccount, aws:PrincipalArn, aws:PrincipalType), which is decided for a known principal
because its identity is known; the words say the grant was narrowed.

A document or statement the evaluator cannot fully read (malformed JSON, an unknown condition
operator or key, a policy variable, a document over IAM's size limits, a missing managed policy)
is never taken as an Allow or a Deny: it is listed as unreadable with the reason, rights it might
touch carry a note, and the rest is evaluated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import catalog

ACCOUNT_RE = re.compile(r"^\d{12}$")
IAM_ARN_RE = re.compile(r"^arn:(aws[a-z-]*):(iam|sts)::(\d{12}):(.+)$")

# IAM's quotas on document size, in characters without white space (IAM does not count it). A
# document over its quota cannot have come from AWS as it stands.
MANAGED_POLICY_LIMIT = 6144
INLINE_LIMITS = {"user": 2048, "group": 5120, "role": 10240}  # all of an entity's inline policies together
TRUST_POLICY_LIMIT = 4096  # 2,048 by default, raisable to 4,096
KEY_POLICY_LIMIT = 32768
SCP_LIMIT = 5120

# Condition keys about the caller's identity, decided for a known principal (see the module note).
IDENTITY_KEYS = {"kms:calleraccount", "aws:principalaccount", "aws:principalarn", "aws:principaltype"}
DECIDABLE_OPERATORS = {
    "StringEquals",
    "StringNotEquals",
    "StringLike",
    "StringNotLike",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "ArnEquals",
    "ArnNotEquals",
    "ArnLike",
    "ArnNotLike",
}


# --- Parsed documents ------------------------------------------------------------------------
@dataclass(frozen=True)
class Via:
    """What gives a right: kind is key-policy, identity-policy, grant, assume-role, boundary or scp."""

    kind: str
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name}


@dataclass(frozen=True)
class Condition:
    operator: str
    key: str
    values: tuple[str, ...]
    deny: bool = False  # from a Deny statement: the right holds unless this condition is true

    def block(self) -> tuple[str, str, list[str]]:
        return self.operator, self.key, list(self.values)


@dataclass(frozen=True)
class Unreadable:
    document: str  # "key-policy", "identity-policy:<name>", "trust-policy:<role>", ...
    statement: str  # Sid, "#<index>", or "" for the whole document
    reason: str
    principal: str = ""  # whose document it is ("" for the key policy)

    def as_dict(self) -> dict[str, str]:
        return {
            "document": self.document,
            "statement": self.statement,
            "reason": self.reason,
            "principal": self.principal,
        }


@dataclass
class Statement:
    index: int
    sid: str
    effect: str
    source: Via
    principals: list[tuple[str, str]] | None = None  # (kind, value); None: no Principal element
    not_principals: list[tuple[str, str]] | None = None
    actions: list[str] | None = None
    not_actions: list[str] | None = None
    resources: list[str] | None = None
    not_resources: list[str] | None = None
    conditions: tuple[Condition, ...] = ()
    problem: str = ""
    # Matching is asked for the same few dozen actions over and over: remembered per statement.
    _matched: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    @property
    def label(self) -> str:
        return self.sid or f"#{self.index}"

    def source_via(self) -> Via:
        """What a right from this statement is said to come from (key policy: the statement's Sid)."""
        if self.source.kind == "key-policy":
            return Via("key-policy", self.label)
        if self.source.kind == "trust-policy":
            return Via("trust-policy", self.source.name)
        return self.source

    def action_applies(self, action: str) -> bool:
        known = self._matched.get(action)
        if known is None:
            if self.actions is not None:
                known = any(catalog.matches(p, action) for p in self.actions)
            else:
                known = not any(catalog.matches(p, action) for p in self.not_actions or [])
            self._matched[action] = known
        return known

    def resource_applies(self, resource: str) -> bool:
        if self.resources is not None:
            return any(catalog.matches(p, resource) for p in self.resources)
        if self.not_resources is not None:
            return not any(catalog.matches(p, resource) for p in self.not_resources)
        return True  # resource policies may leave Resource out: the resource itself


@dataclass
class Document:
    kind: str  # key-policy, identity-policy, boundary, scp, trust-policy
    name: str
    statements: list[Statement] = field(default_factory=list)
    problems: list[Unreadable] = field(default_factory=list)
    raw: Any = None

    @property
    def readable(self) -> bool:
        return not any(p.statement == "" for p in self.problems)


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _strings(value: Any) -> list[str] | None:
    items = _list(value)
    return [str(v) for v in items] if all(isinstance(v, str) for v in items) else None


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def size_without_whitespace(document: Any) -> int:
    text = document if isinstance(document, str) else json.dumps(document, separators=(",", ":"))
    return len("".join(text.split()))


def _parse_principals(value: Any) -> list[tuple[str, str]] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [("AWS", value)] if value == "*" else [("AWS", value)]
    if not isinstance(value, dict):
        return None
    found: list[tuple[str, str]] = []
    for kind, members in value.items():
        names = _strings(members)
        if names is None:
            return None
        found.extend((str(kind), m) for m in names)
    return found


def _parse_conditions(raw: Any, deny: bool) -> tuple[tuple[Condition, ...], str]:
    if raw is None:
        return (), ""
    if not isinstance(raw, dict):
        return (), "Condition is not an object"
    found: list[Condition] = []
    for operator, block in raw.items():
        if not catalog.known_operator(str(operator)):
            return (), f"unknown condition operator {operator}"
        if not isinstance(block, dict):
            return (), f"condition {operator} is not an object"
        for key, values in block.items():
            if not catalog.known_condition_key(str(key)):
                return (), f"unknown condition key {key}"
            texts = tuple(_value_text(v) for v in _list(values))
            if any("${" in t for t in texts):
                return (), f"policy variable in condition {key}"
            found.append(Condition(str(operator), str(key), texts, deny))
    return tuple(found), ""


def parse_statement(raw: Any, index: int, source: Via, resource_policy: bool) -> Statement:
    statement = Statement(index=index, sid="", effect="", source=source)
    if not isinstance(raw, dict):
        statement.problem = "statement is not an object"
        return statement
    sid = raw.get("Sid")
    statement.sid = sid if isinstance(sid, str) else ""
    statement.effect = str(raw.get("Effect", ""))
    if statement.effect not in ("Allow", "Deny"):
        statement.problem = f"Effect is {statement.effect or 'missing'}, not Allow or Deny"
        return statement
    for name in ("Action", "NotAction", "Resource", "NotResource"):
        if name in raw and _strings(raw[name]) is None:
            statement.problem = f"{name} holds something other than strings"
            return statement
    if ("Action" in raw) == ("NotAction" in raw):
        statement.problem = "needs exactly one of Action and NotAction"
        return statement
    if "Resource" in raw and "NotResource" in raw:
        statement.problem = "has both Resource and NotResource"
        return statement
    statement.actions = _strings(raw["Action"]) if "Action" in raw else None
    statement.not_actions = _strings(raw["NotAction"]) if "NotAction" in raw else None
    statement.resources = _strings(raw["Resource"]) if "Resource" in raw else None
    statement.not_resources = _strings(raw["NotResource"]) if "NotResource" in raw else None
    if not resource_policy and statement.resources is None and statement.not_resources is None:
        statement.problem = "identity policy statement without Resource"
        return statement
    if resource_policy:
        if "Principal" in raw:
            statement.principals = _parse_principals(raw["Principal"])
            if statement.principals is None:
                statement.problem = "Principal is not readable"
                return statement
        elif "NotPrincipal" in raw:
            statement.not_principals = _parse_principals(raw["NotPrincipal"])
            if statement.not_principals is None:
                statement.problem = "NotPrincipal is not readable"
                return statement
        else:
            statement.problem = "resource policy statement without Principal"
            return statement
    elif "Principal" in raw or "NotPrincipal" in raw:
        statement.problem = "identity policy statement with a Principal"
        return statement
    for pattern in (statement.resources or []) + (statement.not_resources or []):
        if "${" in pattern:
            statement.problem = f"policy variable in resource {pattern}"
            return statement
    statement.conditions, statement.problem = _parse_conditions(raw.get("Condition"), statement.effect == "Deny")
    return statement


def parse_document(raw: Any, kind: str, name: str, *, limit: int | None = None, owner: str = "") -> Document:
    """A policy document (dict, or the JSON text) as statements; problems say what could not be read."""
    label = f"{kind}:{name}" if name else kind
    document = Document(kind=kind, name=name, raw=raw)

    def whole(reason: str) -> Document:
        document.problems.append(Unreadable(label, "", reason, owner))
        return document

    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            return whole(f"malformed JSON: {exc}")
    if not isinstance(raw, dict):
        return whole("not a JSON object" if raw is not None else "document not available")
    if limit is not None:
        size = size_without_whitespace(raw)
        if size > limit:
            return whole(f"{size} characters, over IAM's limit of {limit}")
    via_kind = "key-policy" if kind == "key-policy" else kind
    resource_policy = kind in ("key-policy", "trust-policy", "rcp")
    for index, item in enumerate(_list(raw.get("Statement"))):
        statement = parse_statement(item, index, Via(via_kind, name), resource_policy)
        if statement.problem:
            document.problems.append(Unreadable(label, statement.label, statement.problem, owner))
        document.statements.append(statement)
    if "Statement" not in raw:
        return whole("no Statement")
    return document


# --- Principals ------------------------------------------------------------------------------
def account_of(arn: str) -> str:
    if ACCOUNT_RE.match(arn):
        return arn
    match = IAM_ARN_RE.match(arn)
    return match.group(3) if match else ""


def root_of(account: str) -> str:
    return f"arn:aws:iam::{account}:root"


def role_of_session(arn: str) -> str:
    """arn:aws:sts::1:assumed-role/R/s -> arn:aws:iam::1:role/R ('' if not a role session)."""
    match = IAM_ARN_RE.match(arn)
    if match and match.group(2) == "sts" and match.group(4).startswith("assumed-role/"):
        parts = match.group(4).split("/")
        if len(parts) >= 3:
            return f"arn:{match.group(1)}:iam::{match.group(3)}:role/{parts[1]}"
    return ""


@dataclass
class Identity:
    """An IAM user or role with its identity policies, boundary and (roles) trust policy."""

    arn: str
    kind: str  # "user" or "role"
    name: str
    account: str
    documents: list[Document] = field(default_factory=list)
    boundary: Document | None = None
    trust: Document | None = None
    groups: list[str] = field(default_factory=list)  # group ARNs (users)
    # Managed policies attached (directly or through a group): arn -> where from.
    managed: dict[str, str] = field(default_factory=dict)

    @property
    def problems(self) -> list[Unreadable]:
        found = [p for d in self.documents for p in d.problems]
        if self.boundary:
            found.extend(self.boundary.problems)
        return found

    def matches_name(self, value: str) -> bool:
        """Whether a principal value names this identity. A role-session ARN does not: it names that
        session only (it is evaluated as a principal of its own, with the role's policies)."""
        if value == self.arn:
            return True
        if self.kind == "role":
            # A key policy may name a role without its path.
            if value.startswith(f"arn:aws:iam::{self.account}:role/") and value.rsplit("/", 1)[-1] == self.name:
                return _role_key(value) == _role_key(self.arn)
        return False


def _role_key(arn: str) -> tuple[str, str]:
    return account_of(arn), arn.rsplit("/", 1)[-1]


@dataclass
class World:
    """Every account's identities, managed policies and SCPs, built from AWS-shaped responses."""

    identities: dict[str, Identity] = field(default_factory=dict)  # arn -> identity
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)  # managed policy arn -> AWS entry
    scps: dict[str, list[list[Document]] | None] = field(default_factory=dict)  # account -> levels
    rcps: dict[str, list[Document]] = field(default_factory=dict)  # resource account -> its RCPs
    problems: list[Unreadable] = field(default_factory=list)  # SCPs and others not tied to one identity
    chains: dict[tuple[str, int], list[tuple[Identity, list[Way]]]] = field(default_factory=dict, repr=False)
    # What does not depend on a key, remembered for the world's life (access.escalation).
    memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        details: dict[str, dict[str, Any] | None],
        scps: dict[str, list[dict[str, Any]] | None] | None = None,
        rcps: dict[str, list[dict[str, Any]] | None] | None = None,
    ) -> World:
        world = cls()
        for account, account_details in sorted(details.items()):
            if account_details:
                world._add_account(account, account_details)
        for account, attached in sorted((scps or {}).items()):
            world.scps[account] = world._scp_levels(account, attached)
        for account, attached in sorted((rcps or {}).items()):
            world.rcps[account] = world._rcps(account, attached)
        return world

    def _add_account(self, account: str, details: dict[str, Any]) -> None:
        for entry in details.get("Policies") or []:
            if isinstance(entry, dict) and entry.get("Arn"):
                self.policies[str(entry["Arn"])] = entry
        groups = {str(g.get("GroupName")): g for g in details.get("GroupDetailList") or [] if isinstance(g, dict)}
        for user in details.get("UserDetailList") or []:
            if not isinstance(user, dict) or not user.get("Arn"):
                continue
            identity = Identity(str(user["Arn"]), "user", str(user.get("UserName", "")), account)
            inline = list(user.get("UserPolicyList") or [])
            self._add_inline(identity, inline, "user")
            self._add_attached(identity, user.get("AttachedManagedPolicies") or [], "")
            for group_name in user.get("GroupList") or []:
                group = groups.get(str(group_name))
                identity.groups.append(str(group["Arn"]) if group and group.get("Arn") else str(group_name))
                if group is None:
                    continue
                self._add_inline(identity, list(group.get("GroupPolicyList") or []), "group", group=str(group_name))
                self._add_attached(identity, group.get("AttachedManagedPolicies") or [], str(group_name))
            identity.boundary = self._boundary(identity, user.get("PermissionsBoundary"))
            self.identities[identity.arn] = identity
        for role in details.get("RoleDetailList") or []:
            if not isinstance(role, dict) or not role.get("Arn"):
                continue
            identity = Identity(str(role["Arn"]), "role", str(role.get("RoleName", "")), account)
            self._add_inline(identity, list(role.get("RolePolicyList") or []), "role")
            self._add_attached(identity, role.get("AttachedManagedPolicies") or [], "")
            identity.boundary = self._boundary(identity, role.get("PermissionsBoundary"))
            identity.trust = parse_document(
                role.get("AssumeRolePolicyDocument"),
                "trust-policy",
                identity.name,
                limit=TRUST_POLICY_LIMIT,
                owner=identity.arn,
            )
            self.identities[identity.arn] = identity

    def _add_inline(self, identity: Identity, entries: list[Any], scope: str, group: str = "") -> None:
        total = sum(size_without_whitespace(e.get("PolicyDocument")) for e in entries if isinstance(e, dict))
        over = total > INLINE_LIMITS[scope]
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            name = str(entry.get("PolicyName", ""))
            label = f"{group}/{name}" if group else name
            document = parse_document(entry.get("PolicyDocument"), "identity-policy", label, owner=identity.arn)
            if over:
                document.statements = []
                document.problems = [
                    Unreadable(
                        f"identity-policy:{label}",
                        "",
                        f"the {scope}'s inline policies total {total} characters, over IAM's limit of "
                        f"{INLINE_LIMITS[scope]}",
                        identity.arn,
                    )
                ]
            identity.documents.append(document)

    def managed_document(self, arn: str, owner: str, version: str | None = None) -> Document:
        entry = self.policies.get(arn)
        name = entry.get("PolicyName", arn.rsplit("/", 1)[-1]) if entry else arn.rsplit("/", 1)[-1]
        raw: Any = None
        if entry is not None:
            wanted = version or entry.get("DefaultVersionId")
            for item in entry.get("PolicyVersionList") or []:
                if isinstance(item, dict) and (
                    item.get("VersionId") == wanted or (version is None and item.get("IsDefaultVersion"))
                ):
                    raw = item.get("Document")
                    break
        document = parse_document(raw, "identity-policy", str(name), limit=MANAGED_POLICY_LIMIT, owner=owner)
        if raw is None:
            document.problems = [
                Unreadable(f"identity-policy:{name}", "", f"managed policy {arn} not in the IAM snapshot", owner)
            ]
        return document

    def _add_attached(self, identity: Identity, attached: list[Any], group: str) -> None:
        for entry in attached:
            if not isinstance(entry, dict) or not entry.get("PolicyArn"):
                continue
            arn = str(entry["PolicyArn"])
            identity.managed.setdefault(arn, f"group {group}" if group else "attached")
            identity.documents.append(self.managed_document(arn, identity.arn))

    def _boundary(self, identity: Identity, boundary: Any) -> Document | None:
        if not isinstance(boundary, dict) or not boundary.get("PermissionsBoundaryArn"):
            return None
        document = self.managed_document(str(boundary["PermissionsBoundaryArn"]), identity.arn)
        document.kind = "boundary"
        for statement in document.statements:
            statement.source = Via("boundary", document.name)
        document.problems = [
            Unreadable(p.document.replace("identity-policy:", "boundary:", 1), p.statement, p.reason, p.principal)
            for p in document.problems
        ]
        return document

    def _scp_levels(self, account: str, attached: list[dict[str, Any]] | None) -> list[list[Document]] | None:
        if attached is None:
            return None
        levels: dict[str, list[Document]] = {}
        for entry in attached:
            if not isinstance(entry, dict):
                continue
            name = str(entry.get("Name") or entry.get("Id") or "")
            document = parse_document(entry.get("Content"), "scp", name, limit=SCP_LIMIT, owner=root_of(account))
            self.problems.extend(document.problems)
            levels.setdefault(str(entry.get("TargetId", "")), []).append(document)
        return list(levels.values())

    def _rcps(self, account: str, attached: list[dict[str, Any]] | None) -> list[Document]:
        # Resource control policies can only deny (the allow is AWS's RCPFullAWSAccess, always
        # there), so their levels do not matter: every Deny over the account's resources applies.
        found: list[Document] = []
        for entry in attached or []:
            if isinstance(entry, dict):
                name = str(entry.get("Name") or entry.get("Id") or "")
                document = parse_document(entry.get("Content"), "rcp", name, limit=SCP_LIMIT, owner=root_of(account))
                self.problems.extend(document.problems)
                found.append(document)
        return found

    def accounts(self) -> set[str]:
        return {i.account for i in self.identities.values()}


# --- Rights ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Way:
    """One way a right holds: what gives it (all of vias together) under all of conditions."""

    vias: tuple[Via, ...]
    conditions: tuple[Condition, ...] = ()
    narrowed: tuple[Condition, ...] = ()  # identity conditions decided true for this principal

    @property
    def conditional(self) -> bool:
        return bool(self.conditions)

    def join(self, other: Way) -> Way:
        return Way(
            _unique(self.vias + other.vias),
            _unique(self.conditions + other.conditions),
            _unique(self.narrowed + other.narrowed),
        )

    def with_conditions(self, conditions: Iterable[Condition]) -> Way:
        return Way(self.vias, _unique(self.conditions + tuple(conditions)), self.narrowed)


def _unique(items: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


def _simplify(ways: list[Way]) -> list[Way]:
    """Unconditional ways make the conditional ones moot; duplicates go."""
    ways = list(dict.fromkeys(ways))
    plain = [w for w in ways if not w.conditional]
    return plain or ways


def _product(left: list[Way], right: list[Way]) -> list[Way]:
    return _simplify([a.join(b) for a in left for b in right])


@dataclass
class Outcome:
    """Whether a principal can make one call on one resource: the ways it can (none: it cannot)."""

    ways: list[Way] = field(default_factory=list)
    uncertain: list[Unreadable] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return bool(self.ways)

    @property
    def unconditional(self) -> bool:
        return any(not w.conditional for w in self.ways)


# --- Condition deciding ----------------------------------------------------------------------
def _principal_type(identity: Identity) -> str:
    return "User" if identity.kind == "user" else "AssumedRole"


def decide(condition: Condition, identity: Identity | None) -> bool | None:
    """True/False when the condition is about the caller's identity and the caller is known; else None."""
    if identity is None or condition.key.lower() not in IDENTITY_KEYS:
        return None
    operator = catalog.base_operator(condition.operator)
    if operator not in DECIDABLE_OPERATORS or condition.operator.lower().startswith("forallvalues:"):
        return None
    key = condition.key.lower()
    if key == "aws:principalarn":
        actual = [identity.arn]  # a role session's aws:PrincipalArn is the role's ARN
    elif key == "aws:principaltype":
        actual = [_principal_type(identity)]
    else:
        actual = [identity.account]
    negated = "Not" in operator
    fold = "IgnoreCase" in operator
    if "Like" in operator:
        hit = any(_case_match(v, a) for v in condition.values for a in actual)
    elif fold:
        hit = any(v.lower() == a.lower() for v in condition.values for a in actual)
    else:
        hit = any(v == a for v in condition.values for a in actual)
    return not hit if negated else hit


def _case_match(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.S) is not None


def _resolve(conditions: tuple[Condition, ...], identity: Identity | None) -> tuple[bool, Way] | None:
    """None if a decided condition fails; else the remaining conditions and the decided ones."""
    remaining: list[Condition] = []
    narrowed: list[Condition] = []
    for condition in conditions:
        verdict = decide(condition, identity)
        if verdict is False:
            return None
        if verdict is True:
            narrowed.append(condition)
        else:
            remaining.append(condition)
    return True, Way((), tuple(remaining), tuple(narrowed))


# --- Evaluation ------------------------------------------------------------------------------
ALL = "*"


def principal_match(statement: Statement, principal: str, identity: Identity | None) -> str:
    """How a resource-policy statement names a caller: "direct", "account", or "" (not at all).

    `principal` is the caller's ARN (or a literal principal value such as a service name)."""
    account = identity.account if identity else account_of(principal)
    is_root = bool(account) and principal == root_of(account)
    if statement.principals is not None:
        found = ""
        for kind, value in statement.principals:
            if kind not in ("AWS", "*"):
                if value == principal:
                    return "direct"
                continue
            if value in (ALL, principal) or (identity is not None and identity.matches_name(value)):
                return "direct"
            if account and value in (account, root_of(account)):
                if is_root:
                    return "direct"
                found = "account"
        return found
    if statement.not_principals is not None:
        # IAM user guide, NotPrincipal: a principal is excluded only when it and its account are
        # both listed, and a Deny's NotPrincipal never excludes a principal with a boundary.
        if statement.effect == "Deny" and identity is not None and identity.boundary is not None:
            return "direct"
        values = {v for _, v in statement.not_principals}
        account_listed = bool(account) and (account in values or root_of(account) in values)
        named = principal in values or (identity is not None and any(identity.matches_name(v) for v in values))
        excluded = account_listed if is_root else named and account_listed
        return "" if excluded else "direct"
    return ""


@dataclass
class Request:
    """One call: an action on a resource, with the resource's policy (None: IAM alone decides)."""

    action: str
    resource: str
    resource_account: str
    resource_policy: Document | None = None
    grants: list[dict[str, Any]] = field(default_factory=list)


def _statement_ways(statement: Statement, identity: Identity | None) -> list[Way]:
    resolved = _resolve(statement.conditions, identity)
    if resolved is None:
        return []
    _, way = resolved
    return [Way((statement.source_via(),), way.conditions, way.narrowed)]


def _applies(statement: Statement, action: str, resource: str) -> bool:
    return not statement.problem and statement.action_applies(action) and statement.resource_applies(resource)


def _touches(statement: Statement, action: str, resource: str) -> bool:
    """Whether an unreadable statement might concern this call (we cannot tell: assume it might)."""
    if statement.actions is None and statement.not_actions is None:
        return True
    return statement.action_applies(action) and (
        (statement.resources is None and statement.not_resources is None) or statement.resource_applies(resource)
    )


def _identity_allow(identity: Identity, request: Request, documents: list[Document]) -> list[Way]:
    ways: list[Way] = []
    for document in documents:
        for statement in document.statements:
            if statement.effect == "Allow" and _applies(statement, request.action, request.resource):
                ways.extend(_statement_ways(statement, identity))
    return _simplify(ways)


def _denials(documents: Iterable[Document], request: Request, identity: Identity | None, principal: str) -> list[Way]:
    """Deny statements that apply: each as the conditions under which it denies (() = always)."""
    found: list[Way] = []
    for document in documents:
        for statement in document.statements:
            if statement.effect != "Deny" or not _applies(statement, request.action, request.resource):
                continue
            if document.kind in ("key-policy", "trust-policy", "rcp") and not principal_match(
                statement, principal, identity
            ):
                continue
            resolved = _resolve(statement.conditions, identity)
            if resolved is None:
                continue
            found.append(Way((statement.source_via(),), resolved[1].conditions, resolved[1].narrowed))
    return found


def _scp_ways(world: World, account: str, request: Request) -> tuple[list[Way] | None, list[Document]]:
    """Ways the SCPs allow the call ([] = they do not; None = not read or none apply), and their docs."""
    levels = world.scps.get(account)
    if not levels:
        return None, []
    ways = [Way(())]
    documents: list[Document] = []
    for level in levels:
        documents.extend(level)
        level_ways: list[Way] = []
        for document in level:
            for statement in document.statements:
                if statement.effect == "Allow" and _applies(statement, request.action, request.resource):
                    level_ways.extend(
                        Way((Via("scp", document.name),), w.conditions, w.narrowed)
                        for w in _statement_ways(statement, None)
                    )
        ways = _product(ways, _simplify(level_ways))
        if not ways:
            return [], documents
    return ways, documents


def _uncertain(documents: Iterable[Document], request: Request) -> list[Unreadable]:
    found: list[Unreadable] = []
    for document in documents:
        for problem in document.problems:
            if problem.statement == "":
                found.append(problem)
        for statement in document.statements:
            if statement.problem and _touches(statement, request.action, request.resource):
                found.append(
                    Unreadable(
                        f"{document.kind}:{document.name}" if document.name else document.kind,
                        statement.label,
                        statement.problem,
                        "",
                    )
                )
    return found


def evaluate(world: World, principal: str, request: Request, extra: list[Document] | None = None) -> Outcome:
    """Can `principal` (an IAM ARN, or a literal principal such as "*" or a service) make `request`?

    `extra` adds identity documents (for "what if this policy were attached" questions)."""
    identity = world.identities.get(principal)
    if identity is None:
        session_role = role_of_session(principal)
        identity = world.identities.get(session_role) if session_role else None
    outcome = Outcome()
    account = identity.account if identity else account_of(principal)
    documents = (identity.documents + (extra or [])) if identity else []
    boundary = [identity.boundary] if identity and identity.boundary else []
    scp_allow, scp_documents = _scp_ways(world, account, request) if account else (None, [])
    resource_documents = [request.resource_policy] if request.resource_policy else []
    if request.resource_policy is not None and account:
        # RCPs limit what any principal (not an AWS service) may do to the account's resources.
        resource_documents += world.rcps.get(request.resource_account, [])
    outcome.uncertain = _uncertain(resource_documents + documents + boundary + scp_documents, request)

    computed: list[list[Way]] = []

    def identity_ways() -> list[Way]:
        # Read only when some statement needs it: most keys never ask (it is most of the cost).
        if not computed:
            found = _identity_allow(identity, request, documents) if identity else []
            if identity and identity.boundary and found:
                found = _product(found, _identity_allow(identity, request, [identity.boundary]))
            computed.append(found)
        return computed[0]

    ways: list[Way] = []
    if request.resource_policy is None:
        ways = identity_ways()
    else:
        same_account = account == request.resource_account
        for statement in request.resource_policy.statements:
            if statement.effect != "Allow" or not _applies(statement, request.action, request.resource):
                continue
            how = principal_match(statement, principal, identity)
            if not how:
                continue
            granted = _statement_ways(statement, identity)
            if not granted:
                continue
            if how == "direct" and (same_account or identity is None):
                # Same account: the resource policy alone suffices; a role's boundary still limits it.
                if identity and identity.kind == "role" and identity.boundary:
                    granted = _product(granted, _identity_allow(identity, request, [identity.boundary]))
                ways.extend(granted)
            elif identity is not None:
                ways.extend(_product(granted, identity_ways()))
            elif how == "account":
                ways.extend(granted)
    for grant in request.grants:
        way = grant_way(grant, principal, identity, request.action)
        if way is not None:
            ways.append(way)
    ways = _simplify(ways)
    if ways and scp_allow is not None:
        ways = _product(ways, scp_allow) if scp_allow else []
    if not ways:
        return outcome
    denials = _denials(resource_documents + documents + boundary + scp_documents, request, identity, principal)
    if any(not d.conditions for d in denials):
        return outcome
    deny_conditions = tuple(c for d in denials for c in d.conditions)
    outcome.ways = _simplify([w.with_conditions(deny_conditions) for w in ways])
    return outcome


def grant_way(grant: dict[str, Any], principal: str, identity: Identity | None, action: str) -> Way | None:
    """The way a grant (ListGrants shape) gives `action` to `principal`, or None."""
    name = str(grant.get("Name") or grant.get("GrantId") or "")
    retiring = str(grant.get("RetiringPrincipal") or "")
    if (
        action.lower() == "kms:retiregrant"
        and retiring
        and (retiring == principal or (identity is not None and identity.matches_name(retiring)))
    ):
        return Way((Via("grant", f"{name} (retiring principal)"),))  # KMS lets it retire the grant
    grantee = str(grant.get("GranteePrincipal") or "")
    if not grantee:
        return None
    if not (grantee == principal or (identity is not None and identity.matches_name(grantee))):
        return None
    operations = {f"kms:{op}".lower() for op in grant.get("Operations") or [] if isinstance(op, str)}
    if action.lower() not in operations:
        return None
    conditions: list[Condition] = []
    for constraint, context in sorted((grant.get("Constraints") or {}).items()):
        if isinstance(context, dict):
            for key, value in sorted(context.items()):
                conditions.append(Condition(f"Grant{constraint}", f"kms:EncryptionContext:{key}", (str(value),)))
    return Way((Via("grant", name),), tuple(conditions))


# --- Keys ------------------------------------------------------------------------------------
@dataclass
class KeyInput:
    arn: str
    account: str
    policy: Any  # the key policy document (dict or JSON text)
    grants: list[dict[str, Any]] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)

    def document(self) -> Document:
        return parse_document(self.policy, "key-policy", "", limit=KEY_POLICY_LIMIT)


@dataclass
class Right:
    """A principal's right to one action on a key, with every way it holds."""

    principal: str
    action: str
    ways: list[Way]
    uncertain: list[Unreadable] = field(default_factory=list)
    through: tuple[Via, ...] = ()  # roles assumed on the way (assume-role vias)

    @property
    def conditional(self) -> bool:
        return all(w.conditional for w in self.ways)


@dataclass
class KeyAccess:
    key: str
    rights: list[Right] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    def of(self, principal: str) -> list[Right]:
        return [r for r in self.rights if r.principal == principal]

    def can(self, principal: str, action: str, *, unconditionally: bool = False) -> bool:
        action = catalog.canonical(action)
        return any(
            r.action == action and (not unconditionally or not r.conditional)
            for r in self.rights
            if r.principal == principal
        )

    def entries(self) -> list[dict[str, Any]]:
        return access_entries(self.rights)


def literal_principals(document: Document, grants: list[dict[str, Any]], world: World) -> list[str]:
    """Principals a key policy or its grants name that are not known identities (other accounts,
    the account roots, services, "*", principals since deleted), in order of appearance."""
    found: list[str] = []
    for statement in document.statements:
        if statement.effect != "Allow" or statement.problem:
            continue
        for _, value in statement.principals or []:
            if value not in world.identities:
                found.append(root_of(value) if ACCOUNT_RE.match(value) else value)
    for grant in grants:
        for field_name in ("GranteePrincipal", "RetiringPrincipal"):
            named = str(grant.get(field_name) or "")
            if named and named not in world.identities:
                found.append(named)
    return list(dict.fromkeys(found))


MAX_ASSUME_DEPTH = 3  # roles assumed one after another, followed this far (stated on the pages)


def assumable_roles(world: World, principal: str) -> list[tuple[Identity, Way]]:
    """Roles `principal` can assume directly, each with the way it can (trust + identity)."""
    found: list[tuple[Identity, Way]] = []
    for role in world.identities.values():
        if role.kind != "role" or role.arn == principal or role.trust is None:
            continue
        outcome = evaluate(
            world,
            principal,
            Request("sts:AssumeRole", role.arn, role.account, resource_policy=role.trust),
        )
        if outcome.ways:
            found.append((role, outcome.ways[0]))
    return found


def role_chains(world: World, principal: str, depth: int = MAX_ASSUME_DEPTH) -> list[tuple[Identity, list[Way]]]:
    """Every role reachable by assuming roles one after another, up to `depth`, with the chain's
    ways (one per hop), shortest chain first. Cached on the world (it does not change)."""
    cached = world.chains.get((principal, depth))
    if cached is not None:
        return cached
    seen = {principal}
    frontier: list[tuple[str, list[Way]]] = [(principal, [])]
    reached: list[tuple[Identity, list[Way]]] = []
    for _ in range(depth):
        following: list[tuple[str, list[Way]]] = []
        for current, chain in frontier:
            for role, way in assumable_roles(world, current):
                if role.arn in seen:
                    continue
                seen.add(role.arn)
                hops = chain + [Way((Via("assume-role", role.arn),) + way.vias, way.conditions, way.narrowed)]
                reached.append((role, hops))
                following.append((role.arn, hops))
        frontier = following
    world.chains[(principal, depth)] = reached
    return reached


def _direct_rights(
    world: World, key: KeyInput, document: Document, principal: str, actions: Iterable[str]
) -> list[Right]:
    rights: list[Right] = []
    for action in actions:
        request = Request(action, key.arn, key.account, resource_policy=document, grants=key.grants)
        outcome = evaluate(world, principal, request)
        if outcome.ways:
            rights.append(Right(principal, action, outcome.ways, outcome.uncertain))
    return rights


def evaluate_key(world: World, key: KeyInput, actions: Iterable[str] | None = None) -> KeyAccess:
    """Every principal's rights on a key: known identities (and roles they can assume), and the
    literal principals the key policy and grants name."""
    actions = list(actions or catalog.key_actions())
    document = key.document()
    access = KeyAccess(key.arn, unreadable=list(document.problems))
    direct: dict[str, list[Right]] = {}
    for principal in list(world.identities) + literal_principals(document, key.grants, world):
        direct[principal] = _direct_rights(world, key, document, principal, actions)
        access.rights.extend(direct[principal])
    for identity in world.identities.values():
        access.unreadable.extend(identity.problems)
        held = {r.action for r in direct[identity.arn] if not r.conditional}
        for role, hops in role_chains(world, identity.arn):
            chain_way = hops[0]
            for hop in hops[1:]:
                chain_way = chain_way.join(hop)
            for right in direct.get(role.arn, []):
                if right.action in held:
                    continue
                access.rights.append(
                    Right(
                        identity.arn,
                        right.action,
                        [chain_way.join(w) for w in right.ways],
                        right.uncertain,
                        through=tuple(v for h in hops for v in h.vias if v.kind == "assume-role"),
                    )
                )
    access.unreadable.extend(world.problems)
    access.unreadable = list(dict.fromkeys(access.unreadable))
    return access


# --- Output ----------------------------------------------------------------------------------
def conditions_block(conditions: Iterable[Condition]) -> dict[str, Any]:
    """Conditions in IAM's own shape ({operator: {key: [values]}}); a Deny's under "Deny"."""
    block: dict[str, Any] = {}
    for condition in conditions:
        target = block.setdefault("Deny", {}) if condition.deny else block
        values = target.setdefault(condition.operator, {}).setdefault(condition.key, [])
        values.extend(v for v in condition.values if v not in values)
    return block


def _join(values: Iterable[str]) -> str:
    return ", ".join(values)


def describe(condition: Condition) -> str:
    """A condition in words; where it narrows a broad grant to a service, organisation or account, it says so."""
    key = condition.key.lower()
    values = _join(condition.values)
    negated = "Not" in condition.operator
    if condition.operator.startswith("Grant"):
        kind = "exactly" if "Equals" in condition.operator else "at least"
        return f"grant constraint: encryption context must hold {kind} {condition.key.split(':', 2)[-1]}={values}"
    if key == "kms:viaservice":
        words = f"only when called through {values}" if not negated else f"except through {values}"
    elif key == "aws:principalorgid":
        words = f"only principals of organisation {values}" if not negated else f"except organisation {values}"
    elif key in ("kms:calleraccount", "aws:principalaccount"):
        words = f"only callers in account {values}" if not negated else f"except callers in account {values}"
    elif key == "kms:grantisforawsresource":
        words = "only for grants an AWS service integrated with KMS creates"
    elif key.startswith("kms:encryptioncontext:"):
        words = f"only with encryption context {condition.key.split(':', 2)[-1]} {condition.operator} {values}"
    elif key == "aws:sourceip":
        words = f"only from {values}" if not negated else f"not from {values}"
    elif key == "aws:multifactorauthpresent":
        words = "only with MFA" if values.lower() == "true" else f"MFA {condition.operator} {values}"
    elif key == "aws:principalarn":
        words = f"only callers {values}" if not negated else f"except callers {values}"
    else:
        words = f"{condition.key} {condition.operator} {values}"
    return f"denied {words}" if condition.deny else words


NARROWING_KEYS = {"kms:viaservice", "aws:principalorgid", "kms:calleraccount", "aws:principalaccount"}


def notes(right: Right, way: Way) -> list[str]:
    found: list[str] = []
    broad = any(v.kind == "key-policy" for v in way.vias)
    for condition in way.narrowed:
        found.append(f"a broad grant narrowed by {condition.key}: {describe(condition)} (holds for this principal)")
    for condition in way.conditions:
        prefix = (
            "a broad grant narrowed: "
            if broad and condition.key.lower() in NARROWING_KEYS and not condition.deny
            else "conditional: "
        )
        found.append(prefix + describe(condition))
    for problem in right.uncertain:
        where = f"{problem.document} {problem.statement}".strip()
        found.append(f"uncertain: {where} could not be read ({problem.reason})")
    return list(dict.fromkeys(found))


def principal_note(principal: str, world_accounts: set[str]) -> str:
    if principal == ALL:
        return "anyone: any AWS principal the statement's conditions admit"
    if principal.endswith(":root"):
        account = account_of(principal)
        if account in world_accounts:
            return f"the root user of account {account} (its IAM principals appear separately)"
        return f"account {account}: its root user and any of its principals its own IAM policies allow"
    if "." in principal and ":" not in principal:
        return f"the AWS service {principal}"
    return ""


def access_entries(rights: Iterable[Right], world_accounts: set[str] | None = None) -> list[dict[str, Any]]:
    """Rights in key_access's shape: one entry per (principal, conditions, via), actions together."""
    grouped: dict[tuple[str, str, tuple[Via, ...]], dict[str, Any]] = {}
    for right in rights:
        ways = [w for w in right.ways if not w.conditional] or right.ways
        for way in ways:
            block = conditions_block(way.conditions)
            key = (right.principal, json.dumps(block, sort_keys=True), way.vias)
            entry = grouped.get(key)
            if entry is None:
                entry = grouped[key] = {
                    "principal": right.principal,
                    "actions": [],
                    "conditional": way.conditional,
                    "conditions": block,
                    "via": [v.as_dict() for v in way.vias],
                    "notes": [],
                }
                note = principal_note(right.principal, world_accounts or set())
                if note:
                    entry["notes"].append(note)
            if right.action not in entry["actions"]:
                entry["actions"].append(right.action)
            entry["notes"].extend(n for n in notes(right, way) if n not in entry["notes"])
    entries = list(grouped.values())
    for entry in entries:
        entry["actions"].sort()
    entries.sort(key=lambda e: (e["principal"], e["conditional"], json.dumps(e["via"])))
    return entries


# --- Security Hub KMS.1 / KMS.2 -------------------------------------------------------------
ALL_KEYS_ACTIONS = ("kms:Decrypt", "kms:ReEncryptFrom")
_PROBE_KEY = "kmsdash-probe-any-key"


def _covers_all_keys(pattern: str) -> bool:
    """A resource pattern that matches every key (of an account, a region or all): "*",
    arn:aws:kms:*:*:key/*, arn:aws:kms:us-east-1:111122223333:*, ..."""
    if pattern == ALL:
        return True
    parts = pattern.split(":", 5)
    if len(parts) != 6 or not catalog.matches(parts[2], "kms"):
        return False
    return catalog.matches(parts[5], f"key/{_PROBE_KEY}")


def decrypt_all_keys_statements(document: Document) -> list[Statement]:
    """Allow statements that give kms:Decrypt or kms:ReEncryptFrom on all keys (Security Hub
    KMS.1 for customer managed policies, KMS.2 for inline ones), conditions or not."""
    found: list[Statement] = []
    for statement in document.statements:
        if statement.effect != "Allow" or statement.problem:
            continue
        if not any(statement.action_applies(a) for a in ALL_KEYS_ACTIONS):
            continue
        if statement.resources is not None:
            broad = any(_covers_all_keys(p) for p in statement.resources)
        else:
            broad = not any(_covers_all_keys(p) for p in statement.not_resources or [])
        if broad:
            found.append(statement)
    return found
