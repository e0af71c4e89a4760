"""Reads of the stored IAM snapshots, for the analysis and the pages."""

from __future__ import annotations

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
