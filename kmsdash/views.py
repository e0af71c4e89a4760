from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_safe

from . import selectors
from .roles import ADMIN, ANALYST, FINANCE, has_role, role_required

SNAPSHOT_KEYS = ("as_of", "last_id")


def start(request: HttpRequest) -> HttpResponse:
    """Where a login lands: the first page the user's roles open (finance cannot open the overview)."""
    if has_role(request.user, ANALYST):
        return redirect("audits:overview")
    if has_role(request.user, FINANCE):
        return redirect("costs:overview")
    raise PermissionDenied


@require_safe
@role_required(ADMIN)
def exports(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.export_audits(), 50).get_page(request.GET.get("page"))
    # The snapshot bounds are bookkeeping; the filter is what the person asked for.
    rows = [
        (export, {name: value for name, value in export.filters.items() if name not in SNAPSHOT_KEYS})
        for export in page
    ]
    return render(request, "kmsdash/exports.html", {"page": page, "rows": rows})
