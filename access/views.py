from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from inventory.selectors import resolve_key
from kmsdash.roles import ANALYST, role_required

from . import selectors


@require_safe
@role_required(ANALYST)
def key_access(request: HttpRequest, key: str) -> HttpResponse:
    """The key page's "who can" panel (an htmx fragment)."""
    found = resolve_key(key)
    if found is None:
        return render(request, "access/key_access.html", {"missing": key})
    context = selectors.who_can(found.arn, found.account_id)
    context["key"] = found
    return render(request, "access/key_access.html", context)


@require_safe
@role_required(ANALYST)
def principal(request: HttpRequest, arn: str) -> HttpResponse:
    context = selectors.principal_page(arn)
    if context is None:
        raise Http404("kmsdash knows nothing of this principal.")
    return render(request, "access/principal.html", context)
