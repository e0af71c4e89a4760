from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from kmsdash.middleware import wants_fragment
from kmsdash.roles import ADMIN, ANALYST, role_required

from . import retirement, selectors, services
from .models import Finding


class FindingFilterForm(forms.Form):
    kind = forms.ChoiceField(choices=[("", "All kinds"), *Finding.Kind.choices], required=False)
    severity = forms.ChoiceField(choices=[("", "All severities"), *Finding.Severity.choices], required=False)
    account = forms.RegexField(regex=r"^\d{12}$", required=False, max_length=12)
    status = forms.ChoiceField(
        choices=[("open", "Open"), ("accepted", "Accepted"), ("resolved", "Resolved"), ("all", "All")], required=False
    )
    sort = forms.ChoiceField(
        choices=[(f"{way}{column}", column) for column in selectors.FINDING_SORTS for way in ("", "-")],
        required=False,
        widget=forms.HiddenInput,
    )


class AcceptForm(forms.Form):
    """The reason of an acceptance or of its revocation."""

    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


@require_safe
@role_required(ANALYST)
def key_panel(request: HttpRequest, key: str) -> HttpResponse:
    found = selectors.resolve_key(key)
    if found is None:
        return render(request, "inventory/key_panel.html", {"missing": key})
    # The verdict is read here, not in key_panel: inventory.retirement reads costs, whose
    # selectors read inventory's (an import cycle otherwise). AWS managed keys are never deleted
    # by their owner: no verdict for them.
    verdict = retirement.verdict(found) if found.customer_managed and found.key_state != "Deleted" else None
    return render(request, "inventory/key_panel.html", {**selectors.key_panel(found), "retirement": verdict})


@require_safe
@role_required(ANALYST)
def findings(request: HttpRequest) -> HttpResponse:
    form = FindingFilterForm(request.GET or None)
    params = form.cleaned_data if form.is_valid() else {}
    rows = selectors.findings(
        kind=params.get("kind", ""),
        severity=params.get("severity", ""),
        account=params.get("account", ""),
        status=params.get("status") or "open",
        sort=params.get("sort") or selectors.DEFAULT_FINDING_SORT,
    )
    sort = params.get("sort") or selectors.DEFAULT_FINDING_SORT
    kept = {name: value for name, value in params.items() if value and name != "sort"}
    # Clicking the sorted column flips its direction; another column starts in its own direction.
    sort_urls = {
        column: "?" + urlencode({**kept, "sort": f"-{column}" if sort == column else column})
        for column in selectors.FINDING_SORTS
    }
    shown = list(rows[:500])
    context = {
        "form": form,
        "sort": sort,
        "sort_urls": sort_urls,
        "findings": shown,
        "total": rows.count(),
        "counts": selectors.finding_counts(),
        "accounts": selectors.finding_accounts(),
        "accept_form": AcceptForm(),
        "first_inventory": selectors.first_inventory() if not shown else None,
    }
    template = "inventory/findings.html#results" if wants_fragment(request) else "inventory/findings.html"
    return render(request, template, context)


def _decision(request: HttpRequest, pk: int, decide) -> HttpResponse:
    finding = get_object_or_404(Finding, pk=pk)
    form = AcceptForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("A reason is required.", content_type="text/plain")
    try:
        decide(finding, user=request.user, reason=form.cleaned_data["reason"])
    except services.DecisionRefused as exc:
        return HttpResponse(str(exc), status=409, content_type="text/plain; charset=utf-8")
    return redirect("inventory:findings")


@require_POST
@role_required(ADMIN)
def finding_accept(request: HttpRequest, pk: int) -> HttpResponse:
    return _decision(request, pk, services.accept_finding)


@require_POST
@role_required(ADMIN)
def finding_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    return _decision(request, pk, services.revoke_acceptance)
