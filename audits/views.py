from __future__ import annotations

import json
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_safe

from kmsdash.middleware import wants_fragment
from kmsdash.roles import ADMIN, ANALYST, role_required
from notify.selectors import delivery_health

from . import charts, keyurls, retention, selectors
from .cloudtrail import critical_class
from .exports import may_export
from .filters import PERIODS, EventFilter, explorer_window, period_window
from .models import Event

# Periods short enough for an hour-by-hour chart (from the hourly summary); longer ones show days.
HOURLY_PERIODS = ("24h", "7d")
PER_PAGE = 50


def period_filter(request: HttpRequest, default: str) -> tuple[EventFilter, str]:
    """The request's filters, with `period` (24h, 7d, 30d, 90d) as `since` (see filters.period_window)."""
    return period_window(request.GET, default)


def _hourly_figure(f: EventFilter, period: str) -> dict | None:
    rows = selectors.calls_per_hour(f) if period in HOURLY_PERIODS else None
    return charts.calls_per_hour(rows) if rows else None


def _template(request: HttpRequest, name: str, fragment: str) -> str:
    return f"{name}#{fragment}" if wants_fragment(request) else name


def _critical_rows(events: list[Event]) -> list[tuple[Event, str, str]]:
    """Each critical event with its class (audits.cloudtrail.critical_class, the alerts' too) and
    what the change did (audits.changes), as the critical page, the overview's card and the key
    page show them."""
    changes = selectors.critical_changes(events)
    return [(e, critical_class(e.event_name, e.service), changes.get(e.pk, "")) for e in events]


def _context(f: EventFilter, period: str | None = None, **extra) -> dict:
    return {
        "filter": f,
        "period": period,
        "periods": PERIODS,
        "period_name": PERIODS.get(period or "", ""),
        "events_url": f"{reverse('audits:events')}?{f.querystring()}",
        **extra,
    }


@require_safe
@role_required(ANALYST)
def overview(request: HttpRequest) -> HttpResponse:
    f, period = period_filter(request, "7d")
    figures = f.replace(key="", principal="", service="", operation="", error="", after_hours=None, q="")
    data = selectors.overview(figures)
    context = _context(
        figures,
        period,
        totals=data.totals,
        calls_figure=charts.calls_by_operation(data.calls_per_day),
        failures_figure=charts.failures_by_error(data.failures_per_day),
        hourly_figure=_hourly_figure(figures, period),
        top_keys=data.top_keys,
        critical=_critical_rows(selectors.latest_critical(figures)),
        freshness=selectors.freshness(),
        critical_url=f"{reverse('audits:critical')}?{figures.querystring()}",
    )
    return render(request, _template(request, "audits/overview.html", "results"), context)


@require_safe
@role_required(ANALYST)
def keys(request: HttpRequest) -> HttpResponse:
    f, period = period_filter(request, "30d")
    f = f.replace(q="")  # the figures come from rollups, which hold no user agent or address
    sort = request.GET.get("sort", "-calls")
    if sort.lstrip("-") not in selectors.KEY_SORTS:
        sort = "-calls"
    page = selectors.keys_page(f, sort=sort, page=request.GET.get("page", 1), per_page=PER_PAGE)
    params = _period_params(f, period)

    def url(**changes) -> str:
        return "?" + urlencode({**params, "sort": sort, **changes})

    # Clicking the sorted column flips its direction; a new column starts with the largest first.
    sort_urls = {column: url(sort=column if sort == f"-{column}" else f"-{column}") for column in selectors.KEY_SORTS}
    context = _context(
        f,
        period,
        page=page,
        sort=sort,
        sort_urls=sort_urls,
        previous_url=url(page=page.previous_page_number()) if page.has_previous() else None,
        next_url=url(page=page.next_page_number()) if page.has_next() else None,
    )
    return render(request, _template(request, "audits/keys.html", "table"), context)


@require_safe
@role_required(ANALYST)
def key_detail(request: HttpRequest, key: str) -> HttpResponse:
    arn = selectors.resolve_key(key)
    if arn is None:
        raise Http404("No calls to this key have been recorded.")
    f, period = period_filter(request, "30d")
    # The figures come from rollups, which hold no user agent or address: no search here, so that
    # the lists and the explorer links count what the figures count.
    f = f.replace(key=arn, q="")
    panel_url = keyurls.key_panel_url(arn)
    alias = selectors.alias_names().get(arn, "")
    context = _context(
        f,
        period,
        arn=arn,
        alias=alias,
        totals=selectors.totals(f),
        calls_figure=charts.calls_by_operation(selectors.calls_per_day(f)),
        hourly_figure=_hourly_figure(f, period),
        principals=selectors.key_principals(f),
        services=selectors.key_services(f),
        errors=selectors.error_codes(f),
        unusual=selectors.unusual_calls(f),
        sample=selectors.context_sample(f),
        critical=_critical_rows(list(selectors.critical_events(f, need=20)[:20])),
        panel_url=panel_url,
        access_url=keyurls.key_access_url(arn),
    )
    return render(request, _template(request, "audits/key_detail.html", "results"), context)


def _event_list(request: HttpRequest, f: EventFilter, qs) -> tuple[selectors.EventPage, str | None]:
    cursor = request.GET.get("cursor") or None
    try:
        return selectors.events_page(qs, cursor, PER_PAGE), None
    except selectors.BadCursor as exc:
        return selectors.events_page(qs, None, PER_PAGE), str(exc)


@require_safe
@role_required(ANALYST)
def events(request: HttpRequest) -> HttpResponse:
    # Always a window (the period picker's, unless since/until say otherwise): without one, a filter
    # matching few events would read the whole table.
    f, period = explorer_window(request.GET)
    cursor = request.GET.get("cursor") or None
    try:
        page, cursor_error = selectors.explorer_page(f, cursor, PER_PAGE), None
    except selectors.BadCursor as exc:
        page, cursor_error = selectors.explorer_page(f, None, PER_PAGE), str(exc)
    purged_before = retention.purged_before()
    params = _period_params(f, period)
    context = _context(
        f,
        period,
        page=page,
        # Said only where the filter reaches back past it.
        purged_before=purged_before if purged_before and (f.start is None or f.start < purged_before) else None,
        cursor_error=cursor_error,
        next_url=f"?{urlencode({**params, 'cursor': page.next_cursor})}" if page.next_cursor else None,
        first_url=f"?{urlencode(params)}" if request.GET.get("cursor") else None,
        # The export takes the window as it is now, so its audit row names the days it covers.
        export_params=f.as_params() if may_export(request.user) else None,
        export_max_rows=settings.KMSDASH_EXPORT_MAX_ROWS,
    )
    return render(request, _template(request, "audits/events.html", "results"), context)


@require_safe
@role_required(ANALYST)
def event_raw(request: HttpRequest, pk: int) -> HttpResponse:
    event = get_object_or_404(Event, pk=pk)
    record = event.raw_record()
    raw = "(no raw record kept)" if record is None else json.dumps(record, indent=2, ensure_ascii=False)
    return render(request, "audits/events.html#drawer", {"event": event, "raw": raw})


@require_safe
@role_required(ANALYST)
def critical(request: HttpRequest) -> HttpResponse:
    f, period = period_filter(request, "30d")
    cursor = request.GET.get("cursor") or None
    try:
        position = selectors.decode_cursor(cursor) if cursor else None
    except selectors.BadCursor:
        position = None  # reported by _event_list, which shows the first page
    # Routine service grants (EBS, autoscaling, ...) outnumber the changes that matter: hidden
    # unless asked for, with their count, so the page can say what it left out.
    routine = request.GET.get("routine") == "1"
    qs = selectors.critical_events(f, cursor=position, need=PER_PAGE + 1, routine=routine)
    page, cursor_error = _event_list(request, f, qs)
    params = _period_params(f, period)
    if routine:
        params["routine"] = "1"
    context = _context(
        f,
        period,
        page=page,
        rows=_critical_rows(page.events),
        routine=routine,
        routine_count=None if routine else selectors.routine_critical_count(f),
        routine_url=f"?{urlencode({**params, 'routine': '1'})}",
        important_url=f"?{urlencode({k: v for k, v in params.items() if k != 'routine'})}",
        cursor_error=cursor_error,
        operations=selectors.CRITICAL,
        next_url=f"?{urlencode({**params, 'cursor': page.next_cursor})}" if page.next_cursor else None,
        first_url=f"?{urlencode(params)}" if cursor else None,
    )
    return render(request, _template(request, "audits/critical.html", "results"), context)


def _period_params(f: EventFilter, period: str) -> dict[str, str]:
    """Parameters that reproduce this view: a named period stays relative to today."""
    if period == "custom":
        return {**f.as_params(), "period": "custom"}
    return {**f.replace(since=None, until=None).as_params(), "period": period}


@require_safe
@role_required(ADMIN)
def health(request: HttpRequest) -> HttpResponse:
    """Ingestion health: every scope's state, lag and last error, the quarantine and retention."""
    now = timezone.now()
    scopes = selectors.ingestion_health(now)
    context = {
        "now": now,
        "scopes": scopes,
        "warnings": sum(scope.warning for scope in scopes),
        "lag_warning_minutes": int(selectors.LAG_WARNING.total_seconds() // 60),
        "quarantine_recent": selectors.recent_quarantine_count(now),
        "quarantine_days": selectors.QUARANTINE_RECENT.days,
        "sources": selectors.sources(),
        "retention": selectors.retention(),
        "deliveries": delivery_health(now),
        "own_calls": selectors.own_calls_per_day(now),
        "own_call_days": selectors.OWN_CALL_DAYS,
    }
    template = "kmsdash/health.html#status" if wants_fragment(request) else "kmsdash/health.html"
    return render(request, template, context)
