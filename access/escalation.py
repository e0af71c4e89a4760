"""Escalation paths: principals who cannot use a key today but could give themselves that right.

Pure, over access.policy's World and KeyAccess. A path is a chain of steps, each a call the
principal (or a role it has become) is allowed to make:

- kms:PutKeyPolicy on the key (then any key action);
- kms:CreateGrant on the key (then the operations a grant can carry, limited by kms:GrantOperations);
- iam:PutUserPolicy / AttachUserPolicy, PutRolePolicy / AttachRolePolicy, PutGroupPolicy /
  AttachGroupPolicy (on its groups), CreatePolicyVersion / SetDefaultPolicyVersion (on a managed
  policy attached to it) over itself or a role it can become: what it would gain is evaluated,
  not assumed, by adding the policy (an Allow of everything; for SetDefaultPolicyVersion, each
  stored non-default version) and evaluating the key again, so a key policy that does not let the
  account in, a boundary or a Deny still stops it;
- iam:UpdateAssumeRolePolicy on a role that can use the key (then sts:AssumeRole into it);
- sts:AssumeRole into a role whose trust policy admits it, and iam:PassRole to a service that runs
  as a role (the service actions come from cloudsplaining's privilege-escalation patterns), as the
  first steps towards a role that can do one of the above.

Rights a principal already has through sts:AssumeRole are access, not escalation (access.policy).
The patterns are compared with cloudsplaining's list (PRIVILEGE_ESCALATION_METHODS), which is where
the PassRole service combinations are read from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from cloudsplaining.shared.constants import PRIVILEGE_ESCALATION_METHODS

from . import catalog
from .policy import (
    Condition,
    Document,
    Identity,
    KeyAccess,
    KeyInput,
    Request,
    World,
    conditions_block,
    evaluate,
    parse_document,
)

MAX_STEPS = 3  # steps in one path, at most (stated on the pages)
MAX_PATHS = 5  # paths kept per (principal, key), shortest first

ALLOW_EVERYTHING = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}

# The services whose roles a PassRole pattern runs code as, where the trust principal differs
# from "<prefix>.amazonaws.com".
SERVICE_PRINCIPALS = {
    "ecs": ("ecs-tasks.amazonaws.com",),
    "apprunner": ("tasks.apprunner.amazonaws.com", "build.apprunner.amazonaws.com"),
    "datapipeline": ("datapipeline.amazonaws.com", "elasticmapreduce.amazonaws.com"),
}


@dataclass(frozen=True)
class Step:
    action: str
    on: str
    conditions: tuple[Condition, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        step: dict[str, Any] = {"action": self.action, "on": self.on}
        if self.conditions:
            step["conditions"] = conditions_block(self.conditions)
        return step


@dataclass
class Escalation:
    principal: str
    key: str
    gains: list[str]
    path: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "key": self.key,
            "gains": self.gains,
            "path": [s.as_dict() for s in self.path],
        }


@functools.lru_cache(maxsize=1)
def passrole_patterns() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(service prefix, the other actions it needs), from cloudsplaining's PassRole patterns."""
    found: list[tuple[str, tuple[str, ...]]] = []
    for actions in PRIVILEGE_ESCALATION_METHODS.values():
        lowered = [a.lower() for a in actions]
        if "iam:passrole" not in lowered:
            continue
        others = tuple(catalog.canonical(a) for a in lowered if a != "iam:passrole")
        if others:
            found.append((others[0].split(":", 1)[0], others))
    return tuple(found)


def _service_principals(prefix: str) -> tuple[str, ...]:
    return SERVICE_PRINCIPALS.get(prefix, (f"{prefix}.amazonaws.com",))


def _allowed(world: World, principal: str, action: str, resource: str, account: str) -> tuple[Condition, ...] | None:
    """An IAM-only call (no resource policy): None if not allowed, else the conditions it needs."""
    memo = ("allowed", principal, action, resource, account)
    if memo not in world.memo:
        outcome = evaluate(world, principal, Request(action, resource, account))
        world.memo[memo] = min((w.conditions for w in outcome.ways), key=len) if outcome.ways else None
    return world.memo[memo]


def _key_allowed(world: World, principal: str, key: KeyInput, document: Document, action: str):
    outcome = evaluate(
        world, principal, Request(action, key.arn, key.account, resource_policy=document, grants=key.grants)
    )
    if not outcome.ways:
        return None
    return min((w.conditions for w in outcome.ways), key=len)


def transitions(world: World, principal: str) -> list[tuple[Identity, list[Step]]]:
    """Roles `principal` can become in one move: sts:AssumeRole, or iam:PassRole to a service."""
    memo = ("transitions", principal)
    if memo not in world.memo:
        world.memo[memo] = _transitions(world, principal)
    return world.memo[memo]


def _transitions(world: World, principal: str) -> list[tuple[Identity, list[Step]]]:
    found: list[tuple[Identity, list[Step]]] = []
    for role in world.identities.values():
        if role.kind != "role" or role.arn == principal or role.trust is None:
            continue
        trust = Request("sts:AssumeRole", role.arn, role.account, resource_policy=role.trust)
        outcome = evaluate(world, principal, trust)
        if outcome.ways:
            conditions = min((w.conditions for w in outcome.ways), key=len)
            found.append((role, [Step("sts:AssumeRole", role.arn, conditions)]))
            continue
        passing = _allowed(world, principal, "iam:PassRole", role.arn, role.account)
        if passing is None:
            continue
        for prefix, actions in passrole_patterns():
            if not any(evaluate(world, s, trust).ways for s in _service_principals(prefix)):
                continue
            if all(_allowed(world, principal, a, "*", role.account) is not None for a in actions):
                steps = [Step("iam:PassRole", role.arn, passing)] + [Step(a, role.arn) for a in actions]
                found.append((role, steps))
                break
    return found


def reachable(world: World, principal: str, max_moves: int) -> list[tuple[Identity | None, list[Step]]]:
    """(identity, the steps to become it): the principal itself first, then roles, by moves."""
    me = world.identities.get(principal)
    reached: list[tuple[Identity | None, list[Step]]] = [(me, [])]
    seen = {principal}
    frontier: list[tuple[str, list[Step]]] = [(principal, [])]
    for _ in range(max_moves):
        following: list[tuple[str, list[Step]]] = []
        for current, steps in frontier:
            for role, more in transitions(world, current):
                if role.arn in seen:
                    continue
                seen.add(role.arn)
                path = steps + more
                reached.append((role, path))
                following.append((role.arn, path))
        frontier = following
    return reached


def _writes(identity: Identity) -> list[tuple[str, str]]:
    """(action, resource) of the identity-policy writes that would change what `identity` may do."""
    found: list[tuple[str, str]] = []
    if identity.kind == "user":
        found += [("iam:PutUserPolicy", identity.arn), ("iam:AttachUserPolicy", identity.arn)]
        for group in identity.groups:
            if group.startswith("arn:"):
                found += [("iam:PutGroupPolicy", group), ("iam:AttachGroupPolicy", group)]
    else:
        found += [("iam:PutRolePolicy", identity.arn), ("iam:AttachRolePolicy", identity.arn)]
    return found


def _hypotheses(world: World, identity: Identity) -> list[tuple[str, str, Document]]:
    """(action, resource, document it would add) for every identity-policy write over `identity`."""
    everything = parse_document(ALLOW_EVERYTHING, "identity-policy", "(a policy they could add)")
    found = [(action, resource, everything) for action, resource in _writes(identity)]
    for arn in identity.managed:
        found.append(("iam:CreatePolicyVersion", arn, everything))
        entry = world.policies.get(arn) or {}
        for version in entry.get("PolicyVersionList") or []:
            if isinstance(version, dict) and not version.get("IsDefaultVersion") and version.get("VersionId"):
                document = world.managed_document(arn, identity.arn, str(version["VersionId"]))
                found.append(("iam:SetDefaultPolicyVersion", arn, document))
    return found


def _gains_with(world: World, identity: Identity, key: KeyInput, document: Document, extra: Document) -> set[str]:
    gained: set[str] = set()
    for action in catalog.key_actions():
        request = Request(action, key.arn, key.account, resource_policy=document, grants=key.grants)
        if any(not w.conditional for w in evaluate(world, identity.arn, request, extra=[extra]).ways):
            gained.add(action)
    return gained


def key_escalations(world: World, key: KeyInput, access: KeyAccess, max_steps: int = MAX_STEPS) -> list[Escalation]:
    """Every escalation path to rights on `key` for the world's identities, shortest first."""
    document = key.document()
    held: dict[str, set[str]] = {}
    for right in access.rights:
        if not right.conditional:
            held.setdefault(right.principal, set()).add(right.action)
    all_actions = set(catalog.key_actions())
    grantable = set(catalog.grant_operations()) & all_actions
    found: list[Escalation] = []
    hypothetical: dict[tuple[str, str, str], set[str]] = {}
    for principal in sorted(world.identities):
        mine = held.get(principal, set())
        if mine >= all_actions:
            continue
        paths: list[Escalation] = []
        reach = reachable(world, principal, max_steps - 1)
        for actor, to_actor in reach:
            if actor is None:
                continue
            # Becoming a role that can use the key (through PassRole: assumed roles' rights are
            # already the principal's access, so they gain nothing here).
            if actor.arn != principal:
                gains = held.get(actor.arn, set()) - mine
                if gains:
                    paths.append(Escalation(principal, key.arn, sorted(gains), list(to_actor)))
            # On the key itself.
            conditions = _key_allowed(world, actor.arn, key, document, "kms:PutKeyPolicy")
            if conditions is not None:
                gains = all_actions - mine
                if gains:
                    paths.append(
                        Escalation(
                            principal,
                            key.arn,
                            sorted(gains),
                            to_actor + [Step("kms:PutKeyPolicy", key.arn, conditions)],
                        )
                    )
            conditions = _key_allowed(world, actor.arn, key, document, "kms:CreateGrant")
            if conditions is not None:
                limited = grantable
                for condition in conditions:
                    if condition.key.lower() == "kms:grantoperations" and not condition.deny:
                        limited = limited & {catalog.canonical(f"kms:{v}") for v in condition.values}
                gains = limited - mine
                if gains:
                    paths.append(
                        Escalation(
                            principal, key.arn, sorted(gains), to_actor + [Step("kms:CreateGrant", key.arn, conditions)]
                        )
                    )
            # Over an identity the principal is or can become.
            for target, to_target in reach:
                if target is None or len(to_actor) + 1 + (len(to_target) if target is not actor else 0) > max_steps:
                    continue
                for action, resource, extra in _hypotheses(world, target):
                    conditions = _allowed(world, actor.arn, action, resource, target.account)
                    if conditions is None:
                        continue
                    cache_key = (target.arn, resource + action, extra.name)
                    if cache_key not in hypothetical:
                        hypothetical[cache_key] = _gains_with(world, target, key, document, extra)
                    gains = hypothetical[cache_key] - mine
                    if gains:
                        tail = to_target if target is not actor else []
                        paths.append(
                            Escalation(
                                principal,
                                key.arn,
                                sorted(gains),
                                to_actor + [Step(action, resource, conditions)] + tail,
                            )
                        )
            # Make a role that can use the key trust the principal.
            if len(to_actor) + 2 <= max_steps:
                for role in world.identities.values():
                    if role.kind != "role" or role.arn == principal:
                        continue
                    gains = held.get(role.arn, set()) - mine
                    if not gains:
                        continue
                    conditions = _allowed(world, actor.arn, "iam:UpdateAssumeRolePolicy", role.arn, role.account)
                    if conditions is None:
                        continue
                    paths.append(
                        Escalation(
                            principal,
                            key.arn,
                            sorted(gains),
                            to_actor
                            + [
                                Step("iam:UpdateAssumeRolePolicy", role.arn, conditions),
                                Step("sts:AssumeRole", role.arn),
                            ],
                        )
                    )
        unique: dict[tuple[tuple[str, str], ...], Escalation] = {}
        for path in sorted(paths, key=lambda e: (len(e.path), -len(e.gains))):
            unique.setdefault(tuple((s.action, s.on) for s in path.path), path)
        found.extend(list(unique.values())[:MAX_PATHS])
    return found
