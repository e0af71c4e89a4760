"""Who can use each key of an account: the stored IAM snapshot + inventory's key policies and grants,
through the pure evaluator (access/policy.py, access/escalation.py), stored as KeyAnalysis rows.

The one write path for access results: the Celery task and `key_access --analyse` both call
`analyse_account`. Every known account's snapshot is in the world, so a principal of another
configured account that a key policy lets in is evaluated with its own IAM policies.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from inventory.models import Key
from inventory.services import DELETED
from kmsdash.locks import run_lock

from . import escalation, policy, selectors
from .models import AccessEntry, EscalationPath, KeyAnalysis

log = logging.getLogger(__name__)


def build_world() -> policy.World:
    accounts = selectors.accounts()
    return policy.World.build(
        {a: selectors.authorization_details(a) for a in accounts},
        {a: selectors.service_control_policies(a) for a in accounts},
        {a: selectors.resource_control_policies(a) for a in accounts},
    )


def key_input(key: Key) -> policy.KeyInput:
    grants = [
        {
            "GrantId": g.grant_id,
            "Name": g.name,
            "GranteePrincipal": g.grantee_principal,
            "RetiringPrincipal": g.retiring_principal,
            "Operations": list(g.operations or []),
            "Constraints": dict(g.constraints or {}),
        }
        for g in key.grants.all()
    ]
    return policy.KeyInput(key.arn, key.account_id, key.policy or None, grants, [a.arn for a in key.aliases.all()])


def analyse_key(world: policy.World, key: Key) -> dict[str, Any]:
    """The pure results for one key: entries, escalations and what could not be read."""
    given = key_input(key)
    access = policy.evaluate_key(world, given)
    paths = escalation.key_escalations(world, given, access)
    return {
        "entries": policy.access_entries(access.rights, world.accounts()),
        "escalations": [p.as_dict() for p in paths],
        "unreadable": [u.as_dict() for u in access.unreadable],
    }


def lock_name(account_id: str) -> str:
    return f"access:analysis:{account_id}"


def analyse_account(account_id: str) -> dict[str, int] | None:
    """Recompute and store the access of every key of the account (not deleted ones). None, having
    changed nothing, when another analysis of the account holds its lock."""
    with run_lock(lock_name(account_id)) as acquired:
        if not acquired:
            return None
        return _analyse(account_id)


def _analyse(account_id: str) -> dict[str, int]:
    now = timezone.now()
    world = build_world()
    keys = list(
        Key.objects.filter(account_id=account_id).exclude(key_state=DELETED).prefetch_related("grants", "aliases")
    )
    results = {key.arn: (key, analyse_key(world, key)) for key in keys}
    scps_evaluated = world.scps.get(account_id) is not None
    note = selectors.scps_note(account_id)
    counts = {"keys": 0, "entries": 0, "escalations": 0, "unreadable": 0}
    with transaction.atomic():
        KeyAnalysis.objects.filter(account_id=account_id).exclude(key_arn__in=list(results)).delete()
        for arn, (key, result) in results.items():
            analysis, _ = KeyAnalysis.objects.update_or_create(
                key_arn=arn,
                defaults={
                    "account_id": key.account_id,
                    "region": key.region,
                    "computed_at": now,
                    "unreadable": result["unreadable"],
                    "scps_evaluated": scps_evaluated,
                    "scps_note": note,
                },
            )
            analysis.entries.all().delete()
            analysis.escalations.all().delete()
            AccessEntry.objects.bulk_create(
                AccessEntry(
                    analysis=analysis,
                    key_arn=arn,
                    principal=e["principal"],
                    actions=e["actions"],
                    conditional=e["conditional"],
                    conditions=e["conditions"],
                    via=e["via"],
                    notes=e["notes"],
                )
                for e in result["entries"]
            )
            EscalationPath.objects.bulk_create(
                EscalationPath(
                    analysis=analysis, key_arn=arn, principal=p["principal"], gains=p["gains"], path=p["path"]
                )
                for p in result["escalations"]
            )
            counts["keys"] += 1
            counts["entries"] += len(result["entries"])
            counts["escalations"] += len(result["escalations"])
            counts["unreadable"] += len(result["unreadable"])
    log.info("access analysis", extra={"account_id": account_id, **counts})
    return counts
