"""The IAM write path: read one account's IAM (and, where it may, the Organizations SCPs over it),
then store it as a new snapshot only when it changed. Resource control policies are read with the
SCPs, the same way.

The Celery task, the management command and the demo all call `ingest_iam`. IAM is global, so one
read per account (in the source's first region, for the partition); every call is paced and
paginated with boto3's paginator.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.models import Source
from inventory.source import RateLimiter, error_code
from kmsdash.locks import run_lock

from .models import AuthorizationChange, AuthorizationSnapshot, IamRun

log = logging.getLogger(__name__)

FILTER = ["User", "Role", "Group", "LocalManagedPolicy", "AWSManagedPolicy"]
LISTS = ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies")
DEFAULT_REGION = "us-east-1"
# Requests per second we allow ourselves. IAM's control plane is shared by everything the account
# runs (and throttles hard); Organizations allows a few per second per account.
DEFAULT_RATES: dict[str, float] = {
    "GetAccountAuthorizationDetails": 2,
    "GetCallerIdentity": 2,
    "DescribeOrganization": 1,
    "ListParents": 1,
    "ListPoliciesForTarget": 1,
    "DescribePolicy": 1,
}
# A role's last use changes with use alone: not a change of who may do what.
VOLATILE = ("RoleLastUsed",)
# Organizations errors that mean "this account may not read them", not "the read failed".
SCP_UNREADABLE = {
    "AccessDeniedException",
    "AWSOrganizationsNotInUseException",
    "AccessDeniedForDependencyException",
    "TargetNotFoundException",
    "UnsupportedAPIEndpointException",
}
# An organisation without resource control policies (not enabled, or an older partition).
RCP_ABSENT = {"PolicyTypeNotEnabledException", "InvalidInputException"}


def rates() -> dict[str, float]:
    return {**DEFAULT_RATES, **getattr(settings, "KMSDASH_IAM_RATE_LIMITS", {})}


@dataclass
class IamSnapshot:
    account_id: str
    details: dict[str, list[dict[str, Any]]]
    scps: list[dict[str, Any]] | None
    scps_note: str
    pages: int
    rcps: list[dict[str, Any]] | None = None


def _plain(value: Any) -> Any:
    """JSON-able: datetimes as ISO text, as AWS's JSON APIs would give them."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _paced(client: Any, limiter: RateLimiter) -> Any:
    # Every API call, each page of a paginator included, waits for its turn first.
    client.meta.events.register("before-call", lambda model, **_: limiter.wait(model.name))
    return client


class IamReader:
    def __init__(self, iam: Any, organizations: Any = None, sts: Any = None, *, page_size: int | None = None) -> None:
        limiter = RateLimiter(rates())
        self.iam = _paced(iam, limiter)
        self.organizations = _paced(organizations, limiter) if organizations is not None else None
        self.sts = _paced(sts, limiter) if sts is not None else None
        # IAM's largest page (1000) unless told otherwise: smaller pages only cost more calls.
        self.page_size = page_size or getattr(settings, "KMSDASH_IAM_PAGE_SIZE", None) or 1000

    def read(self, account_id: str = "") -> IamSnapshot:
        if not account_id and self.sts is not None:
            account_id = str(self.sts.get_caller_identity()["Account"])
        details, pages = self.read_details()
        scps, rcps, note = self.read_organization_policies(account_id)
        return IamSnapshot(account_id, details, scps, note, pages, rcps)

    def read_details(self) -> tuple[dict[str, list[dict[str, Any]]], int]:
        """GetAccountAuthorizationDetails, every page merged, in AWS's response shape.

        boto3 decodes the URL-encoded policy documents into dicts (a document it cannot parse stays
        text, for the analysis to report). AWS managed policies attached to nothing (nor used as a
        boundary) are left out: they give no one anything, and they are most of the answer's size.
        """
        merged: dict[str, list[dict[str, Any]]] = {name: [] for name in LISTS}
        pages = 0
        paginator = self.iam.get_paginator("get_account_authorization_details")
        for page in paginator.paginate(Filter=FILTER, PaginationConfig={"PageSize": self.page_size}):
            pages += 1
            for name in LISTS:
                merged[name].extend(_plain(page.get(name) or []))
        merged["Policies"] = [p for p in merged["Policies"] if _in_use(p)]
        return merged, pages

    def read_scps(self, account_id: str) -> tuple[list[dict[str, Any]] | None, str]:
        """The SCPs attached to the account, each OU above it and the root, one entry per attachment;
        None and the reason when this account's role may not read them."""
        scps, _, note = self.read_organization_policies(account_id)
        return scps, note

    def read_organization_policies(
        self, account_id: str
    ) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None, str]:
        """(SCPs, RCPs, note) over the account: each attachment on the account, every OU above it and
        the root, as {Id, Name, Content, TargetId, TargetType}. Both None, and the note says why, when
        this account's role may not read Organizations; RCPs alone [] where the organisation has not
        enabled them."""
        if self.organizations is None:
            return None, None, "SCPs not evaluated: Organizations was not read."
        org = self.organizations
        try:
            organization = org.describe_organization()["Organization"]
            if organization.get("MasterAccountId") == account_id:
                return [], [], "The organization's management account: SCPs and RCPs do not apply to it."
            targets = [(account_id, "ACCOUNT")]
            child = account_id
            while True:
                parents = org.list_parents(ChildId=child).get("Parents") or []
                if not parents:
                    break
                child, kind = parents[0]["Id"], parents[0]["Type"]
                targets.append((child, kind))
                if kind == "ROOT":
                    break
            contents: dict[str, Any] = {}
            scps = self._attached(targets, "SERVICE_CONTROL_POLICY", contents)
            try:
                rcps = self._attached(targets, "RESOURCE_CONTROL_POLICY", contents)
            except ClientError as exc:
                if error_code(exc) not in RCP_ABSENT:
                    raise
                rcps = []
        except ClientError as exc:
            code = error_code(exc)
            if code in SCP_UNREADABLE:
                return None, None, f"SCPs not evaluated: this account cannot read them ({code})."
            raise
        return scps, rcps, ""

    def _attached(self, targets: list[tuple[str, str]], policy_type: str, contents: dict[str, Any]) -> list[dict]:
        assert self.organizations is not None
        found: list[dict[str, Any]] = []
        paginator = self.organizations.get_paginator("list_policies_for_target")
        for target_id, target_type in targets:
            for page in paginator.paginate(TargetId=target_id, Filter=policy_type):
                for summary in page.get("Policies") or []:
                    policy_id = summary["Id"]
                    if policy_id not in contents:
                        policy = self.organizations.describe_policy(PolicyId=policy_id)["Policy"]
                        contents[policy_id] = _document(policy.get("Content") or "")
                    found.append(
                        {
                            "Id": policy_id,
                            "Name": summary.get("Name", ""),
                            "Content": contents[policy_id],
                            "TargetId": target_id,
                            "TargetType": target_type,
                        }
                    )
        return found


def _document(text: str) -> Any:
    """An SCP's JSON text as a dict; text that is not JSON stays text, for the analysis to report."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _in_use(policy: dict[str, Any]) -> bool:
    if ":iam::aws:policy/" not in str(policy.get("Arn", "")):
        return True  # the account's own policies: kept even unattached (they can be attached)
    return bool(policy.get("AttachmentCount") or policy.get("PermissionsBoundaryUsageCount"))


def reader_for(source: Source | None) -> IamReader:
    from kmsdash.aws import client

    region = iam_region(source)
    return IamReader(
        client("iam", region, source=source),
        client("organizations", region, source=source),
        client("sts", region, source=source),
    )


def iam_region(source: Source | None) -> str:
    return (source.regions[0] if source and source.regions else "") or DEFAULT_REGION


def lock_name(source: Source | None, account_id: str | None = None) -> str:
    """The run lock of one account's IAM read ('default': the credential chain's own account)."""
    return f"iam:{account_id or (source.account_id if source else '') or 'default'}"


def ingest_iam(
    source: Source | None, *, account_id: str | None = None, reader: IamReader | None = None
) -> IamRun | None:
    """Read one account's IAM and store it, under its run lock; a failed read changes nothing but the
    ledger. Returns None, having read nothing, when another caller holds the lock."""
    name = lock_name(source, account_id)
    with run_lock(name) as acquired:
        if not acquired:
            log.info("iam read already running", extra={"lock": name})
            return None
        return _ingest_iam(source, account_id=account_id, reader=reader)


def _ingest_iam(source: Source | None, *, account_id: str | None, reader: IamReader | None) -> IamRun:
    account_id = account_id or (source.account_id if source else "")
    run = IamRun.objects.create(account_id=account_id)
    try:
        reader = reader or reader_for(source)
        snapshot = reader.read(account_id)
        run.account_id = snapshot.account_id
        store_snapshot(snapshot, run)
        run.status = IamRun.Status.SUCCEEDED
    except Exception as exc:  # noqa: BLE001 - the ledger records every failure, then re-raises
        run.status = IamRun.Status.FAILED
        run.error = f"{type(exc).__name__}: {exc}"[:2000]
        run.finished_at = timezone.now()
        run.save()
        raise
    run.finished_at = timezone.now()
    run.save()
    return run


def _without_volatile(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in VOLATILE}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _entities(
    details: dict[str, Any], scps: list[dict[str, Any]] | None, rcps: list[dict[str, Any]] | None = None
) -> dict[tuple[str, str], str]:
    """(kind, ARN or SCP id) -> digest of what IAM says about it."""
    kinds = {
        "UserDetailList": AuthorizationChange.Kind.USER,
        "GroupDetailList": AuthorizationChange.Kind.GROUP,
        "RoleDetailList": AuthorizationChange.Kind.ROLE,
        "Policies": AuthorizationChange.Kind.POLICY,
    }
    found = {
        (str(kind), str(item.get("Arn", ""))): _digest(_without_volatile(item))
        for name, kind in kinds.items()
        for item in details.get(name) or []
    }
    for kind, attached in ((AuthorizationChange.Kind.SCP, scps), (AuthorizationChange.Kind.RCP, rcps)):
        by_id: dict[str, list[Any]] = {}
        for entry in attached or []:
            by_id.setdefault(str(entry.get("Id", "")), []).append(entry)
        for policy_id, entries in by_id.items():
            found[(str(kind), policy_id)] = _digest(entries)
    return found


@transaction.atomic
def store_snapshot(snapshot: IamSnapshot, run: IamRun) -> AuthorizationSnapshot:
    now = timezone.now()
    details = snapshot.details
    run.pages = snapshot.pages
    run.users = len(details["UserDetailList"])
    run.groups = len(details["GroupDetailList"])
    run.roles = len(details["RoleDetailList"])
    run.policies = len(details["Policies"])
    run.scps_evaluated = snapshot.scps is not None
    run.scps_note = snapshot.scps_note
    stable = {name: [_without_volatile(i) for i in details[name]] for name in LISTS}
    digest = _digest({"details": stable, "scps": snapshot.scps, "rcps": snapshot.rcps})
    current = (
        AuthorizationSnapshot.objects.select_for_update()
        .filter(account_id=snapshot.account_id)
        .order_by("-version")
        .first()
    )
    if current is not None and current.sha256 == digest:
        # Same access; refresh what changes with use alone (a role's last use) and the note.
        current.details, current.scps_note, current.last_seen_at = details, snapshot.scps_note, now
        current.save(update_fields=["details", "scps_note", "last_seen_at"])
        return current
    new = AuthorizationSnapshot.objects.create(
        account_id=snapshot.account_id,
        version=(current.version + 1) if current else 1,
        sha256=digest,
        details=details,
        scps=snapshot.scps,
        rcps=snapshot.rcps,
        scps_note=snapshot.scps_note,
        first_seen_at=now,
        last_seen_at=now,
    )
    if current is not None:
        before = _entities(current.details, current.scps, current.rcps)
        after = _entities(details, snapshot.scps, snapshot.rcps)
        changes = [
            AuthorizationChange(
                snapshot=new,
                kind=kind,
                arn=arn,
                change=AuthorizationChange.Change.ADDED
                if (kind, arn) not in before
                else AuthorizationChange.Change.REMOVED
                if (kind, arn) not in after
                else AuthorizationChange.Change.CHANGED,
            )
            for kind, arn in sorted(before.keys() | after.keys())
            if before.get((kind, arn)) != after.get((kind, arn))
        ]
        AuthorizationChange.objects.bulk_create(changes)
        run.changes = len(changes)
    return new
