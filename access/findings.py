"""The access analysis' findings, as inventory.findings Facts (recomputed with the others).

inventory.findings.current_facts() calls access_facts(), so the one recompute reconciles every
finding kind: these hold while the analysis and the snapshot say so, and resolve when they stop.

- iam-decrypt-all-keys-managed / -inline (Security Hub KMS.1 / KMS.2): a customer managed or an
  inline IAM policy allows kms:Decrypt or kms:ReEncryptFrom on all keys;
- escalation-path: a principal could give itself rights on a key (the shortest path is shown);
- unused-access: a principal can decrypt, encrypt or manage a key unconditionally but made no such
  call in UNUSED_DAYS days (the rollups), with the policy change that would remove the right;
- access-unexplained: successful calls (the rollups, UNEXPLAINED_DAYS days) by a principal the
  analysis says cannot make them.

AWS managed keys are never judged, as in the inventory's findings.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Max, Sum

from audits.models import DailyRollup
from inventory.findings import UNUSED_DAYS, Fact
from inventory.models import Finding, Key

from . import catalog, policy, selectors
from .models import AccessEntry, EscalationPath, KeyAnalysis

K = Finding.Kind
S = Finding.Severity

# The kinds this module raises (the demo's IAM world raises them; inventory's demo keys the rest).
ACCESS_KINDS = frozenset(
    {
        K.IAM_DECRYPT_ALL_KEYS_MANAGED,
        K.IAM_DECRYPT_ALL_KEYS_INLINE,
        K.ESCALATION_PATH,
        K.UNUSED_ACCESS,
        K.ACCESS_UNEXPLAINED,
    }
)
UNEXPLAINED_DAYS = 30
# The rights unused-access looks at: what a principal could do with the key, by kind.
UNUSED_GROUPS = {
    "decrypt": ("decrypt", "re-encrypt"),
    "encrypt": ("encrypt", "generate-data-keys"),
    "manage": ("management",),
}


def _statements(statements: list[policy.Statement]) -> list[dict[str, Any]]:
    return [
        {"sid": s.sid, "index": s.index, "actions": s.actions, "not_actions": s.not_actions, "resources": s.resources}
        for s in statements
    ]


def decrypt_all_keys_facts() -> Iterator[Fact]:
    for account in selectors.accounts():
        details = selectors.authorization_details(account) or {}
        world = policy.World.build({account: details})
        attached: dict[str, list[str]] = {}
        for identity in world.identities.values():
            for arn in identity.managed:
                attached.setdefault(arn, []).append(identity.arn)
        for arn, entry in sorted(world.policies.items()):
            if arn.startswith("arn:aws:iam::aws:"):
                continue  # AWS managed: KMS.1 covers customer managed policies
            document = world.managed_document(arn, "")
            found = policy.decrypt_all_keys_statements(document)
            if found:
                yield Fact(
                    K.IAM_DECRYPT_ALL_KEYS_MANAGED,
                    S.MEDIUM,
                    f"Customer managed policy {entry.get('PolicyName', arn)} allows kms:Decrypt or "
                    "kms:ReEncryptFrom on all KMS keys (Security Hub KMS.1)",
                    subject=arn,
                    account_id=account,
                    evidence={
                        "policy": arn,
                        "statements": _statements(found),
                        "attached_to": sorted(attached.get(arn, [])),
                    },
                )
        for kind, entries, name_field, list_field in (
            ("user", details.get("UserDetailList") or [], "UserName", "UserPolicyList"),
            ("group", details.get("GroupDetailList") or [], "GroupName", "GroupPolicyList"),
            ("role", details.get("RoleDetailList") or [], "RoleName", "RolePolicyList"),
        ):
            for entity in entries:
                for inline in entity.get(list_field) or []:
                    name = str(inline.get("PolicyName", ""))
                    document = policy.parse_document(inline.get("PolicyDocument"), "identity-policy", name)
                    found = policy.decrypt_all_keys_statements(document)
                    if found:
                        yield Fact(
                            K.IAM_DECRYPT_ALL_KEYS_INLINE,
                            S.MEDIUM,
                            f"Inline policy {name} of {kind} {entity.get(name_field, '')} allows kms:Decrypt or "
                            "kms:ReEncryptFrom on all KMS keys (Security Hub KMS.2)",
                            subject=f"{entity.get('Arn', '')}#{name}",
                            account_id=account,
                            evidence={
                                "principal": entity.get("Arn", ""),
                                "policy": name,
                                "statements": _statements(found),
                            },
                        )


def _customer_keys() -> dict[str, Key]:
    return {k.arn: k for k in Key.objects.filter(key_manager="CUSTOMER")}


def escalation_facts(keys: dict[str, Key]) -> Iterator[Fact]:
    shortest: dict[tuple[str, str], EscalationPath] = {}
    for path in EscalationPath.objects.filter(key_arn__in=list(keys)).order_by("id"):
        current = shortest.get((path.key_arn, path.principal))
        if current is None or len(path.path) < len(current.path):
            shortest[(path.key_arn, path.principal)] = path
    for (key_arn, principal), path in sorted(shortest.items()):
        key = keys[key_arn]
        steps = " then ".join(f"{s['action']} on {s['on']}" for s in path.path)
        yield Fact(
            K.ESCALATION_PATH,
            S.HIGH,
            f"{principal} cannot use the key but could give itself {len(path.gains)} rights on it: {steps}",
            key=key_arn,
            subject=principal,
            account_id=key.account_id,
            region=key.region,
            evidence={"principal": principal, "gains": path.gains, "path": path.path},
        )


def _removal(entry: AccessEntry, actions: list[str]) -> str:
    listed = ", ".join(actions)
    changes = []
    # Where an identity policy gives the right, that is the change (the key policy's delegation to
    # IAM serves every principal of the account).
    vias = [v for v in entry.via if v.get("kind") == "identity-policy"] or entry.via
    for via in vias:
        kind, name = via.get("kind"), via.get("name")
        if kind == "identity-policy":
            changes.append(f"remove {listed} on this key from identity policy {name} (or narrow its Resource)")
        elif kind == "key-policy":
            changes.append(f"remove the principal or {listed} from key policy statement {name}")
        elif kind == "grant":
            changes.append(f"retire or revoke grant {name}")
    return "; or ".join(changes) if changes else f"remove {listed} from what gives it"


def unused_facts(keys: dict[str, Key], now: datetime) -> Iterator[Fact]:
    since = now.date() - timedelta(days=UNUSED_DAYS)
    calls = selectors._calls(list(keys), since)
    identities: set[str] = set()
    for account in selectors.accounts():
        details = selectors.authorization_details(account) or {}
        identities.update(str(e.get("Arn")) for k in ("UserDetailList", "RoleDetailList") for e in details.get(k) or [])
    held: dict[tuple[str, str], list[AccessEntry]] = {}
    entries = AccessEntry.objects.filter(key_arn__in=list(keys), conditional=False, principal__in=list(identities))
    for entry in entries.order_by("key_arn", "principal", "id"):
        if not any(v.get("kind") == "assume-role" for v in entry.via):  # those calls are logged as the role's
            held.setdefault((entry.key_arn, entry.principal), []).append(entry)
    for (key_arn, principal), rows in sorted(held.items()):
        key = keys[key_arn]
        made = calls.get(key_arn, {}).get(principal, set())
        for name, groups in UNUSED_GROUPS.items():
            by_entry = [(e, [a for a in e.actions if catalog.group_of(a) in groups]) for e in rows]
            by_entry = [(e, actions) for e, actions in by_entry if actions]
            actions = sorted({a for _, found in by_entry for a in found})
            if not actions or made & {catalog.event_name(a) for a in actions}:
                continue
            yield Fact(
                K.UNUSED_ACCESS,
                S.LOW,
                f"{principal} can {name} with the key but made no such call in {UNUSED_DAYS} days",
                key=key_arn,
                subject=f"{principal}|{name}",
                account_id=key.account_id,
                region=key.region,
                evidence={
                    "principal": principal,
                    "actions": actions,
                    "days": UNUSED_DAYS,
                    "via": [v for e, _ in by_entry for v in e.via],
                    "change": [_removal(e, found) for e, found in by_entry],
                },
            )


def _explained(principal: str, action: str, entries: dict[str, set[str]], known: set[str]) -> bool:
    """Whether the analysis lets `principal` make the call. An account's root stands for its
    principals only where kmsdash has not read the account's IAM; a bare account id (CloudTrail's
    AWSAccount caller) is explained by any principal of that account that may."""
    if action in entries.get(principal, set()) or action in entries.get("*", set()):
        return True
    account = policy.account_of(principal)
    if not account:
        return False
    if account not in known and action in entries.get(policy.root_of(account), set()):
        return True
    if principal == account:
        return any(action in actions for p, actions in entries.items() if policy.account_of(p) == account)
    return False


def unexplained_facts(keys: dict[str, Key], now: datetime) -> Iterator[Fact]:
    analysed = set(KeyAnalysis.objects.filter(key_arn__in=list(keys)).values_list("key_arn", flat=True))
    if not analysed:
        return
    rights: dict[str, dict[str, set[str]]] = {}
    for key_arn, principal, actions in AccessEntry.objects.filter(key_arn__in=analysed).values_list(
        "key_arn", "principal", "actions"
    ):
        rights.setdefault(key_arn, {}).setdefault(principal, set()).update(actions)
    known = set(selectors.accounts())
    since = now.date() - timedelta(days=UNEXPLAINED_DAYS)
    rows = (
        DailyRollup.objects.filter(key__in=list(analysed), day__gte=since, error_code="")
        .exclude(principal="")
        .values("key", "principal", "operation")
        .annotate(calls=Sum("count"), last=Max("last_seen"))
        .order_by("key", "principal", "operation")
    )
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        needed = catalog.actions_of_event(row["operation"])
        if not needed:
            continue  # not a call on a key (or one the catalogue does not know)
        if not policy.account_of(row["principal"]) and row["principal"] not in rights.get(row["key"], {}):
            # An AWS service calling as itself (AWSService): authorized by what the analysis cannot
            # read (AWS-owned grants, service-linked roles), so it would always be "unexplained".
            continue
        if any(_explained(row["principal"], a, rights.get(row["key"], {}), known) for a in needed):
            continue
        found.setdefault((row["key"], row["principal"]), []).append(
            {"operation": row["operation"], "calls": row["calls"], "last_seen": row["last"].isoformat()}
        )
    for (key_arn, principal), operations in sorted(found.items()):
        key = keys[key_arn]
        total = sum(o["calls"] for o in operations)
        yield Fact(
            K.ACCESS_UNEXPLAINED,
            S.MEDIUM,
            f"{principal} made {total} successful calls in {UNEXPLAINED_DAYS} days that the access analysis "
            "says it cannot make: the analysis is wrong or something it cannot see grants the right",
            key=key_arn,
            subject=principal,
            account_id=key.account_id,
            region=key.region,
            evidence={"principal": principal, "operations": operations, "days": UNEXPLAINED_DAYS},
        )


def access_facts(now: datetime) -> list[Fact]:
    keys = _customer_keys()
    facts: list[Fact] = list(decrypt_all_keys_facts())
    facts.extend(escalation_facts(keys))
    facts.extend(unused_facts(keys, now))
    facts.extend(unexplained_facts(keys, now))
    return facts
