from __future__ import annotations

from datetime import timedelta

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from kmsdash.middleware import wants_fragment
from kmsdash.roles import ANALYST, role_required

from . import charts, selectors, services
from .models import Alert, Kind, Severity, State

PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30), "90d": timedelta(days=90)}
PER_PAGE = 200


class AlertFilterForm(forms.Form):
    kind = forms.ChoiceField(choices=[("", "All kinds"), *Kind.choices], required=False)
    severity = forms.ChoiceField(choices=[("", "All severities"), *Severity.choices], required=False)
    state = forms.ChoiceField(choices=[("active", "Not resolved"), *State.choices, ("all", "All")], required=False)
    account = forms.RegexField(regex=r"^\d{12}\Z", required=False, max_length=12)
    key = forms.CharField(required=False, max_length=2048)
    principal = forms.CharField(required=False, max_length=2048)
    period = forms.ChoiceField(choices=[("", "Any time"), *((p, p) for p in PERIODS)], required=False)

    def clean(self):
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        for name in ("key", "principal"):
            if "\x00" in data.get(name, ""):
                self.add_error(name, "No NUL characters.")
        return data


class ActionForm(forms.Form):
    action = forms.ChoiceField(choices=[("acknowledge", "Acknowledge"), ("resolve", "Resolve"), ("snooze", "Snooze")])
    comment = forms.CharField(required=False, max_length=4000)
    hours = forms.IntegerField(required=False, min_value=1, max_value=24 * 90)


@require_safe
@role_required(ANALYST)
def alert_list(request: HttpRequest) -> HttpResponse:
    form = AlertFilterForm(request.GET or None)
    params = form.cleaned_data if form.is_valid() else {}
    period = params.get("period") or ""
    rows = selectors.alerts(
        state=params.get("state") or "active",
        kind=params.get("kind", ""),
        severity=params.get("severity", ""),
        account=params.get("account", ""),
        key=params.get("key", "").strip(),
        principal=params.get("principal", "").strip(),
        detected_since=timezone.now() - PERIODS[period] if period else None,
    )
    if form.is_bound and not form.is_valid():
        rows = rows.none()  # a mistyped filter never widens into everything
    context = {
        "form": form,
        "alerts": rows[:PER_PAGE],
        "total": rows.count(),
        "counts": selectors.counts_by_state(),
    }
    template = "alerts/list.html#results" if wants_fragment(request) else "alerts/list.html"
    return render(request, template, context)


@require_safe
@role_required(ANALYST)
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    alert = get_object_or_404(Alert, pk=pk)
    f = selectors.event_filter(alert)
    series = selectors.hourly_series(alert)
    figure = None
    if series:
        hours, calls, medians, thresholds = series
        name = "Failures" if alert.kind == Kind.FAILURE_BURST else "Calls"
        figure = charts.hourly_with_baseline(hours, calls, medians, thresholds, name=name)
    context = {
        "alert": alert,
        "changes": alert.changes.select_related("user"),
        "events": selectors.sample_events(alert),
        "events_url": f"{reverse('audits:events')}?{f.querystring()}" if alert.key else None,
        "figure": figure,
        "action_form": ActionForm(),
    }
    return render(request, "alerts/detail.html", context)


@require_POST
@role_required(ANALYST)
def act(request: HttpRequest, pk: int) -> HttpResponse:
    alert = get_object_or_404(Alert, pk=pk)
    form = ActionForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Unknown action.", content_type="text/plain")
    if alert.state == State.RESOLVED:
        return HttpResponseBadRequest("This alert is resolved.", content_type="text/plain")
    action, comment = form.cleaned_data["action"], form.cleaned_data["comment"] or ""
    if action == "acknowledge":
        services.change_state(alert, State.ACKNOWLEDGED, user=request.user, comment=comment)
    elif action == "resolve":
        services.change_state(alert, State.RESOLVED, user=request.user, comment=comment)
    else:
        hours = form.cleaned_data["hours"] or 24
        services.change_state(
            alert, State.SNOOZED, user=request.user, comment=comment, until=timezone.now() + timedelta(hours=hours)
        )
    return redirect("alerts:detail", pk=alert.pk)
