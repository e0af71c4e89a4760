from django.conf import settings
from django.http import HttpRequest

from .roles import ADMIN, ANALYST, FINANCE, user_roles


def kmsdash(request: HttpRequest) -> dict:
    roles = user_roles(request.user) if hasattr(request, "user") else set()
    is_admin = ADMIN in roles
    return {
        "KMSDASH_DEMO": settings.KMSDASH_DEMO,
        "can_audit": is_admin or ANALYST in roles,
        "can_costs": is_admin or FINANCE in roles,
        "is_kmsdash_admin": is_admin,
    }
