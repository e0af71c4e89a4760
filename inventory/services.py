"""The inventory write path: snapshot of one (account, region) -> keys, aliases, grants, policy
and state history, trails; then alias re-attribution of events and rollups (through audits' write side).

The Celery task, the management command and the demo all call `ingest_keys`.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from audits.cloudtrail import USAGE_OPERATIONS
from audits.models import DailyRollup, Source
from audits.services import reattribute_alias
from kmsdash import aws
from kmsdash.locks import run_lock

from .models import (
    Alias,
    Finding,
    FindingDecision,
    Grant,
    InventoryRun,
    Key,
    KeyReference,
    KeyStateVersion,
    PolicyVersion,
    ReferenceCheck,
    Trail,
)
from .references import ReferenceReader, ServiceResult
from .source import InventoryReader, KeySnapshot, RegionSnapshot

log = logging.getLogger(__name__)

DELETED = "Deleted"  # our state for a key that ListKeys no longer returns
RECENT_USE_DAYS = 90


def recently_used_keys(account_id: str, region: str) -> set[str]:
    """Keys of this (account, region) that CloudTrail shows used successfully in the last 90 days."""
    prefix = f"arn:aws:kms:{region}:{account_id}:key/" if account_id else ""
    rows = DailyRollup.objects.filter(
        day__gte=timezone.now().date() - timedelta(days=RECENT_USE_DAYS),
        own=False,
        error_code="",
        operation__in=USAGE_OPERATIONS,
        key__startswith=prefix or "arn:aws:kms:",
    )
    if not prefix:
        rows = rows.filter(region=region)
    return set(rows.values_list("key", flat=True).distinct())


def _aware(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def reader_for(source: Source | None, region: str) -> InventoryReader:
    return InventoryReader(aws.client("kms", region, source=source), aws.client("cloudtrail", region, source=source))


def lock_name(source: Source | None, region: str, account_id: str | None = None) -> str:
    """The run lock of one (account, region)'s inventory ('default': the credential chain's own account)."""
    return f"inventory:{account_id or (source.account_id if source else '') or 'default'}:{region}"


def ingest_keys(
    source: Source | None, region: str, *, account_id: str | None = None, reader: InventoryReader | None = None
) -> InventoryRun | None:
    """Read one (account, region) and store it, under its run lock; a failed read changes nothing but
    the ledger. Returns None, having read nothing, when another caller holds the lock: that one is
    doing the same work already."""
    name = lock_name(source, region, account_id)
    with run_lock(name) as acquired:
        if not acquired:
            log.info("inventory already running", extra={"lock": name})
            return None
        return _ingest_keys(source, region, account_id=account_id, reader=reader)


def _ingest_keys(
    source: Source | None, region: str, *, account_id: str | None, reader: InventoryReader | None
) -> InventoryRun:
    account_id = account_id or (source.account_id if source else "")
    run = InventoryRun.objects.create(account_id=account_id, region=region)
    try:
        reader = reader or reader_for(source, region)
        snapshot = reader.read(account_id, region, skip_last_usage=recently_used_keys(account_id, region))
        if not account_id and snapshot.keys:
            account_id = snapshot.keys[0].metadata.get("AWSAccountId", "")
            snapshot.account_id = run.account_id = account_id
        store_snapshot(snapshot, run)
        run.events_reattributed = reattribute_aliases(account_id=account_id, region=region)
        run.status = InventoryRun.Status.SUCCEEDED
    except Exception as exc:  # noqa: BLE001 - the ledger records every failure, then re-raises
        run.status = InventoryRun.Status.FAILED
        run.error = f"{type(exc).__name__}: {exc}"[:2000]
        run.finished_at = timezone.now()
        run.save()
        raise
    run.finished_at = timezone.now()
    run.save()
    return run


@transaction.atomic
def store_snapshot(snapshot: RegionSnapshot, run: InventoryRun) -> None:
    now = timezone.now()
    seen_arns = []
    for snap in snapshot.keys:
        key, state_changed, policy_changed = _store_key(snap, now)
        seen_arns.append(key.arn)
        run.state_changes += int(state_changed)
        run.policy_changes += int(policy_changed)
        run.grants += _store_grants(key, snap, now)
    run.keys = len(seen_arns)

    # Keys gone from ListKeys (deleted after their waiting period): keep them, marked.
    gone = Key.objects.filter(account_id=snapshot.account_id, region=snapshot.region).exclude(arn__in=seen_arns)
    for key in gone.exclude(key_state=DELETED):
        key.key_state = DELETED
        key.save(update_fields=["key_state"])
        KeyStateVersion.objects.create(key=key, key_state=DELETED, rotation_enabled=None, first_seen_at=now)
        run.state_changes += 1

    keys_by_id = {k.key_id: k for k in Key.objects.filter(account_id=snapshot.account_id, region=snapshot.region)}
    alias_arns = []
    for raw in snapshot.aliases:
        arn, name = raw.get("AliasArn"), raw.get("AliasName")
        if not arn or not name:
            continue
        target = raw.get("TargetKeyId") or ""
        Alias.objects.update_or_create(
            arn=arn,
            defaults={
                "name": name,
                "account_id": snapshot.account_id,
                "region": snapshot.region,
                "target_key_id": target,
                "key": keys_by_id.get(target),
                "last_seen_at": now,
            },
        )
        alias_arns.append(arn)
    Alias.objects.filter(account_id=snapshot.account_id, region=snapshot.region).exclude(arn__in=alias_arns).delete()
    run.aliases = len(alias_arns)

    trail_arns = []
    for raw in snapshot.trails:
        Trail.objects.update_or_create(
            arn=raw["TrailARN"],
            defaults={
                "name": raw.get("Name", ""),
                "account_id": snapshot.account_id,
                "home_region": raw.get("HomeRegion", snapshot.region),
                "multi_region": bool(raw.get("IsMultiRegionTrail")),
                "organization": bool(raw.get("IsOrganizationTrail")),
                "event_selectors": raw.get("EventSelectors"),
                "advanced_event_selectors": raw.get("AdvancedEventSelectors") or [],
                "change": raw.get("change") or {},
                "last_seen_at": now,
            },
        )
        trail_arns.append(raw["TrailARN"])
    Trail.objects.filter(account_id=snapshot.account_id, home_region=snapshot.region).exclude(
        arn__in=trail_arns
    ).delete()


def _store_key(snap: KeySnapshot, now: datetime) -> tuple[Key, bool, bool]:
    m = snap.metadata
    config = m.get("MultiRegionConfiguration") or {}
    fields = {
        "key_id": m.get("KeyId", ""),
        "account_id": m.get("AWSAccountId", ""),
        "region": snap.arn.split(":")[3],
        "description": m.get("Description") or "",
        "key_manager": m.get("KeyManager") or "",
        "key_spec": m.get("KeySpec") or m.get("CustomerMasterKeySpec") or "",
        "key_usage": m.get("KeyUsage") or "",
        "key_state": m.get("KeyState") or "",
        "origin": m.get("Origin") or "",
        "multi_region": bool(m.get("MultiRegion")),
        "multi_region_type": config.get("MultiRegionKeyType") or "",
        "primary_arn": (config.get("PrimaryKey") or {}).get("Arn") or "",
        "replica_arns": sorted(r.get("Arn", "") for r in config.get("ReplicaKeys") or [] if isinstance(r, dict)),
        "creation_date": _aware(m.get("CreationDate")),
        "deletion_date": _aware(m.get("DeletionDate")),
        "rotation_enabled": snap.rotation_enabled,
        "rotation_period_days": snap.rotation_period_days,
        "rotations": snap.rotations,
        "on_demand_rotations": snap.on_demand_rotations,
        "valid_to": _aware(m.get("ValidTo")),
        "expiration_model": m.get("ExpirationModel") or "",
        "tags": snap.tags,
        "last_seen_at": now,
    }
    if snap.last_used_at is not None:
        fields["last_used_at"] = _aware(snap.last_used_at)
        fields["last_used_operation"] = snap.last_used_operation
    if snap.usage_tracking_start is not None:
        fields["usage_tracking_start"] = _aware(snap.usage_tracking_start)
    if snap.policy is not None:
        fields["policy"] = snap.policy
    key, _ = Key.objects.update_or_create(arn=snap.arn, defaults=fields)

    state = (key.key_state, key.deletion_date, key.rotation_enabled)
    latest = key.state_versions.order_by("-first_seen_at", "-id").first()
    state_changed = latest is None or (latest.key_state, latest.deletion_date, latest.rotation_enabled) != state
    if state_changed:
        KeyStateVersion.objects.create(
            key=key, key_state=state[0], deletion_date=state[1], rotation_enabled=state[2], first_seen_at=now
        )

    policy_changed = False
    if snap.policy is not None:
        digest = hashlib.sha256(snap.policy.encode()).hexdigest()
        current = key.policy_versions.order_by("-version").first()
        if current is not None and current.sha256 == digest:
            current.last_seen_at = now
            current.save(update_fields=["last_seen_at"])
        else:
            PolicyVersion.objects.create(
                key=key,
                version=(current.version + 1) if current else 1,
                document=snap.policy,
                sha256=digest,
                first_seen_at=now,
                last_seen_at=now,
            )
            policy_changed = current is not None
    return key, state_changed and latest is not None, policy_changed


def _store_grants(key: Key, snap: KeySnapshot, now: datetime) -> int:
    ids = []
    for raw in snap.grants:
        grant_id = raw.get("GrantId")
        if not grant_id:
            continue
        Grant.objects.update_or_create(
            key=key,
            grant_id=grant_id,
            defaults={
                "name": raw.get("Name") or "",
                "grantee_principal": raw.get("GranteePrincipal") or raw.get("GranteeServicePrincipal") or "",
                "retiring_principal": raw.get("RetiringPrincipal") or raw.get("RetiringServicePrincipal") or "",
                "issuing_account": raw.get("IssuingAccount") or "",
                "operations": list(raw.get("Operations") or []),
                "constraints": raw.get("Constraints") or {},
                "creation_date": _aware(raw.get("CreationDate")),
                "last_seen_at": now,
            },
        )
        ids.append(grant_id)
    key.grants.exclude(grant_id__in=ids).delete()
    return len(ids)


def reattribute_aliases(*, account_id: str | None = None, region: str | None = None) -> int:
    """Point events recorded under an alias name or alias ARN at the alias's key, with their rollup
    and summary rows, one transaction per alias (audits.services.reattribute_alias). Idempotent: a
    second run finds nothing left under the alias. Returns the number of events moved."""
    aliases = Alias.objects.filter(key__isnull=False).select_related("key")
    if account_id:
        aliases = aliases.filter(account_id=account_id)
    if region:
        aliases = aliases.filter(region=region)
    moved = 0
    for alias in aliases:
        assert alias.key is not None  # filtered on key__isnull=False
        moved += reattribute_alias(
            alias.account_id, alias.region, alias_name=alias.name, alias_arn=alias.arn, key_arn=alias.key.arn
        )
    return moved


def references_lock_name(account_id: str, region: str) -> str:
    return f"references:{account_id}:{region}"


def refresh_references(
    source: Source | None, region: str, *, account_id: str | None = None, reader: ReferenceReader | None = None
) -> list[ReferenceCheck] | None:
    """Read which resources of one (account, region) name a key, and store them, under the
    references' own run lock. Returns the checks stored, or None, having read nothing, when another
    caller holds the lock. Run after the inventory of the same scope, whose aliases resolve names."""
    account_id = account_id or (source.account_id if source else "")
    if not account_id:
        raise ValueError("refresh_references needs the account id of the resources it reads")
    name = references_lock_name(account_id, region)
    with run_lock(name) as acquired:
        if not acquired:
            log.info("references already being read", extra={"lock": name})
            return None
        if reader is None:
            from .references import reader_for

            reader = reader_for(source, region)
        return store_references(account_id, region, reader.read())


@transaction.atomic
def store_references(account_id: str, region: str, results: list[ServiceResult]) -> list[ReferenceCheck]:
    """Replace the references of every service read; a service not checked keeps what was last
    read from it (dated by last_seen_at) and is marked not checked, with why."""
    from .selectors import resolve_key_ref

    now = timezone.now()
    checks = []
    for result in results:
        check, _ = ReferenceCheck.objects.update_or_create(
            account_id=account_id,
            region=region,
            service=result.service,
            defaults={
                "status": ReferenceCheck.Status.CHECKED if result.checked else ReferenceCheck.Status.NOT_CHECKED,
                "reason": result.reason,
                "resources": result.resources,
                "checked_at": now,
            },
        )
        checks.append(check)
        if not result.checked:
            continue
        KeyReference.objects.filter(account_id=account_id, region=region, service=result.service).delete()
        KeyReference.objects.bulk_create(
            KeyReference(
                account_id=account_id,
                region=region,
                service=result.service,
                resource_type=ref.resource_type,
                resource=ref.resource[:2048],
                key_ref=ref.key_ref[:2048],
                key=resolve_key_ref(ref.key_ref, account_id, region),
                last_seen_at=now,
            )
            for ref in result.references
        )
    return checks


class DecisionRefused(Exception):
    """A decision that does not apply to the finding as it stands (the message says why)."""


def _decide(finding, *, user, reason: str, action: str) -> FindingDecision:
    now = timezone.now()
    decision = FindingDecision.objects.create(
        finding=finding,
        action=action,
        user=user,
        username=user.get_username() if user else "",
        reason=reason,
        decided_at=now,
    )
    log.info("finding %s", action, extra={"finding": finding.pk, "kind": finding.kind, "user": decision.username})
    return decision


def accept_finding(finding, *, user, reason: str) -> Finding:
    """An admin's decision to live with a finding: kept with who, when and why, in the history too.

    A resolved finding no longer holds: there is no risk left to accept. Accepting an accepted one
    again (a renewed decision) replaces the decision in force; the earlier one stays in the history.
    """
    with transaction.atomic():
        finding = Finding.objects.select_for_update().get(pk=finding.pk)
        if finding.resolved_at is not None:
            raise DecisionRefused("This finding is resolved: there is nothing left to accept.")
        decision = _decide(finding, user=user, reason=reason, action=FindingDecision.Action.ACCEPTED)
        finding.accepted_at, finding.accepted_by, finding.accepted_reason = decision.decided_at, user, reason
        finding.save(update_fields=["accepted_at", "accepted_by", "accepted_reason"])
    return finding


def revoke_acceptance(finding, *, user, reason: str) -> Finding:
    """An admin withdraws the acceptance in force: the finding is open again, and the history says why."""
    with transaction.atomic():
        finding = Finding.objects.select_for_update().get(pk=finding.pk)
        if finding.accepted_at is None:
            raise DecisionRefused("This finding is not accepted: there is no acceptance to revoke.")
        _decide(finding, user=user, reason=reason, action=FindingDecision.Action.REVOKED)
        finding.accepted_at, finding.accepted_by, finding.accepted_reason = None, None, ""
        finding.save(update_fields=["accepted_at", "accepted_by", "accepted_reason"])
    return finding
