from __future__ import annotations

from collections import defaultdict

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from alerts import rules
from alerts.models import Kind
from audits.cloudtrail import SHARED_QUOTA_CLASSES, SYMMETRIC
from audits.filters import PERIODS, period_window
from kmsdash.middleware import wants_fragment
from kmsdash.roles import ANALYST, role_required

from . import charts, selectors

DETAILED_SCOPES = 6  # the busiest scopes get their peak minute's callers
DAILY_ROWS = 200


@require_safe
@role_required(ANALYST)
def overview(request: HttpRequest) -> HttpResponse:
    f, period = period_window(request.GET, "7d")
    start, end, account, region = f.start, f.end, f.account, f.region
    if f.errors:
        start = end = None
    threshold = float(rules.load()[Kind.QUOTA_HEADROOM]["ratio"])
    # Charts: peaks per hour over a day or a week, per day beyond.
    bucket = "hour" if period in ("24h", "7d") else "day"
    series = selectors.peaks(start, end, account, region, by=bucket) if not f.errors else []
    overall = selectors.peaks(start, end, account, region) if not f.errors else []
    throttled = selectors.throttled_totals(start, end, account, region) if not f.errors else {}
    throttled_minutes = selectors.throttled_per_minute(start, end, account, region) if not f.errors else {}
    ranked = sorted(overall, key=lambda p: (-(p.share or 0), p.account, p.region, p.quota_class))

    by_scope = defaultdict(list)
    for peak in series:
        if peak.quota_class in SHARED_QUOTA_CLASSES:
            by_scope[(peak.account, peak.region)].append(peak)
    scopes = sorted({(p.account, p.region) for p in overall} | set(throttled_minutes))
    panels = [
        {
            "account": acc,
            "region": reg,
            "headroom": charts.headroom(by_scope.get((acc, reg), []), threshold=threshold),
            "throttled": charts.throttled(throttled_minutes[(acc, reg)]) if (acc, reg) in throttled_minutes else None,
            "throttled_total": sum(n for _, n in throttled_minutes.get((acc, reg), [])),
        }
        for acc, reg in scopes
    ]
    daily = (
        [p for p in selectors.peaks(start, end, account, region, by="day") if p.quota_class in SHARED_QUOTA_CLASSES]
        if not f.errors
        else []
    )
    detailed = [(peak, selectors.peak_callers(peak)) for peak in ranked[:DETAILED_SCOPES] if peak.calls]
    caching = [
        (peak, selectors.cache_candidates(peak)) for peak in ranked if peak.quota_class == SYMMETRIC and peak.calls
    ]
    context = {
        "filter": f,
        "period": period,
        "periods": PERIODS,
        "threshold": threshold,
        "hit_rate": float(settings.KMSDASH_DATA_KEY_CACHE_HIT_RATE),
        "headroom": [(peak, throttled.get((peak.account, peak.region, peak.quota_class), 0)) for peak in ranked],
        "panels": panels,
        "daily": daily[:DAILY_ROWS],
        "daily_cut": len(daily) > DAILY_ROWS,
        "detailed": detailed,
        "caching": [(peak, rows) for peak, rows in caching if rows],
    }
    template = "capacity/overview.html#results" if wants_fragment(request) else "capacity/overview.html"
    return render(request, template, context)
