"""IAM as AWS serves it, where moto differs: GetAccountAuthorizationDetails pages, user permission
boundaries.

IAM speaks the query protocol, not JSON, so instead of an X-Amz-Target add-on this module teaches
moto's own IAM responder (it runs in this process) what it lacks:
- GetAccountAuthorizationDetails honours MaxItems / Marker / IsTruncated (moto returns everything
  in one page), counting users, groups, roles and policies together as AWS does; a marker that is
  not one of ours is InvalidInput.
- PutUserPermissionsBoundary / DeleteUserPermissionsBoundary (moto lacks them); the boundary shows
  in GetAccountAuthorizationDetails' UserDetailList as it does for roles.
- Managed policies carry PolicyName, PolicyId and PermissionsBoundaryUsageCount, as in AWS.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.iam import models as iam_models
from moto.iam.exceptions import InvalidInput, NotFoundException
from moto.iam.responses import IamResponse

DEFAULT_MAX_ITEMS = 100  # AWS's default page; its maximum is 1000
MAX_ITEMS = 1000
LISTS = (("users", "UserDetailList"), ("groups", "GroupDetailList"), ("roles", "RoleDetailList"))


def _user_permissions_boundary(user: Any) -> dict[str, str] | None:
    arn = getattr(user, "permissions_boundary_arn", None)
    if not arn:
        return None
    return {"PermissionsBoundaryType": "PermissionsBoundaryPolicy", "PermissionsBoundaryArn": arn}


def _policy_boundary_usage(policy: Any) -> int:
    backend = policy.backend
    holders = list(backend.users.values()) + list(backend.roles.values())
    return sum(1 for holder in holders if getattr(holder, "permissions_boundary_arn", None) == policy.arn)


def _marker(offset: int) -> str:
    return base64.b64encode(f"kmsdash-iam:{offset}".encode()).decode()


def _offset(marker: str | None) -> int:
    if not marker:
        return 0
    try:
        prefix, _, number = base64.b64decode(marker, validate=True).decode().partition(":")
        if prefix == "kmsdash-iam" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise InvalidInput("Invalid Marker.")


def get_account_authorization_details(self: IamResponse) -> ActionResult:
    details = self.backend.get_account_authorization_details(self._get_param("Filter", []))
    items: list[tuple[str, Any]] = [
        (field, item) for source, field in LISTS for item in sorted(details[source], key=lambda i: i.name)
    ]
    items += [("Policies", p) for p in sorted(details["managed_policies"], key=lambda p: p.arn)]
    start = _offset(self._get_param("Marker"))
    size = max(1, min(self._get_int_param("MaxItems", DEFAULT_MAX_ITEMS), MAX_ITEMS))
    page = items[start : start + size]
    result: dict[str, Any] = {field: [] for _, field in LISTS}
    result["Policies"] = []
    for field, item in page:
        result[field].append(item)
    result["IsTruncated"] = start + size < len(items)
    if result["IsTruncated"]:
        result["Marker"] = _marker(start + size)
    return ActionResult(result)


def put_user_permissions_boundary(self: IamResponse) -> ActionResult:
    boundary = self._get_param("PermissionsBoundary")
    if not self.backend.policy_arn_regex.match(boundary or ""):
        raise InvalidInput(f"Value ({boundary}) for parameter PermissionsBoundary is invalid.")
    user = self.backend.get_user(self._get_param("UserName"))
    user.permissions_boundary_arn = boundary  # type: ignore[attr-defined]  # moto has no such field on users
    return EmptyResult()


def delete_user_permissions_boundary(self: IamResponse) -> ActionResult:
    user = self.backend.get_user(self._get_param("UserName"))
    if not getattr(user, "permissions_boundary_arn", None):
        raise NotFoundException(f"The user {user.name} has no permissions boundary.")
    user.permissions_boundary_arn = None  # type: ignore[attr-defined]
    return EmptyResult()


iam_models.ManagedPolicy.policy_name = property(lambda policy: policy.name)  # type: ignore[attr-defined]
iam_models.ManagedPolicy.policy_id = property(lambda policy: policy.id)  # type: ignore[attr-defined]
iam_models.ManagedPolicy.permissions_boundary_usage_count = property(_policy_boundary_usage)  # type: ignore[attr-defined]
iam_models.User.permissions_boundary = property(_user_permissions_boundary)  # type: ignore[attr-defined]
IamResponse.get_account_authorization_details = get_account_authorization_details  # type: ignore[method-assign]
IamResponse.put_user_permissions_boundary = put_user_permissions_boundary  # type: ignore[attr-defined]
IamResponse.delete_user_permissions_boundary = delete_user_permissions_boundary  # type: ignore[attr-defined]
