from django.conf import settings
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from audits.selectors import first_ingestion
from inventory.selectors import alias_names

from .roles import ADMIN, ANALYST, FINANCE, user_roles


def kmsdash(request: HttpRequest) -> dict:
    roles = user_roles(request.user) if hasattr(request, "user") else set()
    is_admin = ADMIN in roles
    return {
        "KMSDASH_DEMO": settings.KMSDASH_DEMO,
        "can_audit": is_admin or ANALYST in roles,
        "can_costs": is_admin or FINANCE in roles,
        "is_kmsdash_admin": is_admin,
        # Key ARN -> alias for {% key_label %}: read once, and only by a page that names a key.
        "key_aliases": SimpleLazyObject(alias_names),
        # The first ingestion's progress, for the pages' notice (read only where a page shows it).
        "first_ingestion": SimpleLazyObject(first_ingestion),
    }
