from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views.decorators.http import require_POST, require_safe

from kmsdash.csvexport import audited_csv, start_export_audit, web_row_cap
from kmsdash.middleware import HtmxHttpRequest
from kmsdash.roles import FINANCE, role_required

from . import charts, estimate, savings, selectors
from .forms import PeriodForm
from .services import utc_today


@require_safe
@role_required(FINANCE)
def overview(request: HtmxHttpRequest) -> HttpResponse:
    form = PeriodForm(request.GET)
    if not form.is_valid():
        form = PeriodForm({})
        form.is_valid()
        errors = ["Invalid period: showing the default one."]
    else:
        errors = []
    since, until = form.period()
    by = form.cleaned_data["by"]
    days = selectors.daily_costs(since, until)
    names = selectors.account_names()
    series = selectors.grouped_series(days, by)
    context = {
        "form": form,
        "errors": errors,
        "since": since,
        "until": until,
        "by": by,
        "by_choices": charts.BY_CHOICES,
        "by_label": charts.BY_CHOICES[by],
        "daily_figure": charts.daily_figure(days, series, by, names),
        "series_totals": [(charts.series_label(by, label, names), sum(values)) for label, values in series.items()],
    }
    # htmx names the element it will swap: render just that fragment.
    fragment = request.htmx.target if request.htmx and not request.htmx.history_restore_request else None
    if fragment == "daily-chart":
        return render(request, "costs/overview.html#daily-chart", context)

    facts = estimate.load_key_facts()
    result = estimate.estimate(since, until, facts=facts)
    tags = estimate.tag_keys(facts)
    tag = request.GET.get("tag") if request.GET.get("tag") in tags else (tags[0] if tags else "")
    by_tag = result.by_tag(tag, facts) if tag else []
    context.update(tags=tags, tag=tag, by_tag=by_tag, tag_figure=charts.tag_figure(by_tag))
    if fragment == "by-tag":
        return render(request, "costs/overview.html#by-tag", context)

    today = utc_today()
    recon = estimate.reconcile(result, days)
    context.update(
        summary=selectors.month_summary(today),
        spend=selectors.api_spend(selectors.month_start(today), today),
        days=days,
        recon=recon,
        recon_figure=charts.reconciliation_figure(recon),
        recon_accounts=estimate.reconcile_accounts(result, days),
        per_key=selectors.label_keys(result.per_key()[:25]),
        drivers={
            "Keys": selectors.label_drivers(result.drivers("key"), aliases=selectors.alias_names()),
            "Principals": selectors.label_drivers(result.drivers("principal")),
            "Calling services": selectors.label_drivers(result.drivers("service")),
        },
        bucket_drivers=savings.bucket_keys(until),
        caching=savings.data_key_caching(until, facts=facts),
        idle=savings.idle_keys(today, facts=facts),
        account_names=names,
        hit_rate=settings.KMSDASH_DATA_KEY_CACHE_HIT_RATE * 100,
        idle_days=settings.KMSDASH_IDLE_KEY_DAYS,
    )
    context["savings_total"] = (
        sum(b.monthly_saving for b in context["bucket_drivers"])
        + sum(c.monthly_saving for c in context["caching"])
        + sum(k.monthly_saving for k in context["idle"])
    )
    return render(request, "costs/overview.html", context)


@require_POST
@role_required(FINANCE)
def export_csv(request: HttpRequest) -> HttpResponseBase:
    form = PeriodForm(request.POST)
    if not form.is_valid():
        return HttpResponse("Invalid period.", status=400, content_type="text/plain; charset=utf-8")
    since, until = form.period()
    audit = start_export_audit(
        user=request.user,
        kind="costs",
        filters={"since": since.isoformat(), "until": until.isoformat()},
        row_cap=web_row_cap(),
    )
    response = StreamingHttpResponse(
        audited_csv(selectors.DAILY_TABLE_HEADER, selectors.daily_table(since, until), audit),
        content_type="text/csv; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="kmsdash-costs-{since:%Y%m%d}-{until:%Y%m%d}.csv"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
