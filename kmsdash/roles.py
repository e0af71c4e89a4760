"""Roles are Django groups, created by a migration: analyst, finance, admin.

A view declares the roles that may open it; `admin` may open everything. Anyone else gets 403.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

ANALYST = "analyst"
FINANCE = "finance"
ADMIN = "admin"
ROLES = (ANALYST, FINANCE, ADMIN)


def user_roles(user) -> set[str]:
    if not user.is_authenticated or not user.is_active:
        return set()
    if not hasattr(user, "_kmsdash_roles"):
        user._kmsdash_roles = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    return user._kmsdash_roles


def has_role(user, *roles: str) -> bool:
    held = user_roles(user)
    return ADMIN in held or bool(held.intersection(roles))


def role_required(*roles: str) -> Callable:
    """Allow users holding any of `roles` (or admin); 403 for everyone else who is logged in.

    Anonymous users never get here: kmsdash.middleware.HtmxLoginRequiredMiddleware sends them to the
    login page (with HX-Redirect for htmx requests).
    """

    def decorator(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
            if not has_role(request.user, *roles):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        # A function attribute, read by the role x URL matrix test (mypy knows no such attribute).
        wrapped.kmsdash_roles = roles  # type: ignore[attr-defined]
        return wrapped

    return decorator
