"""Cost Explorer ingestion against the emulator over HTTP: paging, restatements, faults, counting."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command

from costs import services
from costs.explorer import MAX_RESTARTS, CostExplorerError
from costs.models import CostRecord, CostRun, UsageClass

pytestmark = [pytest.mark.django_db, pytest.mark.emulator]

TARGET = "AWSInsightsIndexService.GetCostAndUsage"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
A, B = "111122223333", "444455556666"


def row(day, account, usage_type, cost, usage="1000", estimated=True):
    return {
        "date": str(day),
        "account": account,
        "usage_type": usage_type,
        "cost": cost,
        "usage": usage,
        "estimated": estimated,
    }


def days(start: date, end: date):
    while start < end:
        yield start
        start += timedelta(days=1)


def stored() -> dict[tuple[str, str, str], tuple[Decimal, bool]]:
    return {(str(r.day), r.account_id, r.usage_type): (r.amount, r.estimated) for r in CostRecord.objects.all()}


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=True) as traveller:
        yield traveller


def test_the_window_runs_from_the_first_of_last_month_to_tomorrow(aws, clock):
    aws.control("ce/dataset", {"rows": [row("2026-10-01", A, "us-east-1-KMS-Keys", "0.0322580645")]})
    run = services.ingest_costs()
    assert (run.window_start, run.window_end) == (date(2026, 10, 1), date(2026, 11, 21))
    assert run.status == CostRun.Status.SUCCEEDED
    assert stored() == {("2026-10-01", A, "us-east-1-KMS-Keys"): (Decimal("0.0322580645"), True)}


def test_every_page_is_read_with_the_same_parameters_and_every_request_counted(aws, clock):
    rows = [
        row(d, acct, f"{region}-KMS-Requests", "0.0123")
        for d in days(date(2026, 10, 1), date(2026, 11, 21))
        for acct in (A, B)
        for region in ("us-east-1", "eu-west-1")
    ]
    aws.control("ce/dataset", {"rows": rows, "page_size": 7})
    run = services.ingest_costs()
    # 51 days at 7 per page.
    assert run.pages == 8
    assert run.requests == len(aws.requests(TARGET)) == 8
    assert CostRecord.objects.count() == len(rows)
    record = CostRecord.objects.get(day=date(2026, 11, 3), account_id=B, usage_type="eu-west-1-KMS-Requests")
    assert (record.usage_class, record.region, record.amount) == (UsageClass.SYMMETRIC, "eu-west-1", Decimal("0.0123"))
    assert record.metric == "UnblendedCost" and record.unit == "USD"


def test_restated_amounts_replace_the_old_ones_and_the_estimated_flag_clears(aws, clock):
    aws.control("ce/dataset", {"rows": [row("2026-10-31", A, "us-east-1-KMS-Requests", "100.00")]})
    services.ingest_costs()
    aws.control("ce/dataset", {"rows": [row("2026-10-31", A, "us-east-1-KMS-Requests", "97.50", estimated=False)]})
    services.ingest_costs()
    assert stored() == {("2026-10-31", A, "us-east-1-KMS-Requests"): (Decimal("97.50"), False)}


def test_a_group_that_vanishes_from_cost_explorer_vanishes_here(aws, clock):
    aws.control(
        "ce/dataset",
        {
            "rows": [
                row("2026-11-02", A, "us-east-1-KMS-Requests", "1.00"),
                row("2026-11-02", B, "us-east-1-KMS-Requests", "2.00"),
            ]
        },
    )
    services.ingest_costs()
    aws.control("ce/dataset", {"rows": [row("2026-11-02", A, "us-east-1-KMS-Requests", "3.00")]})
    services.ingest_costs()
    assert stored() == {("2026-11-02", A, "us-east-1-KMS-Requests"): (Decimal("3.00"), True)}


def test_days_before_the_window_are_left_alone(aws, clock):
    CostRecord.objects.create(
        day=date(2026, 9, 30),
        account_id=A,
        usage_type="us-east-1-KMS-Keys",
        usage_class=UsageClass.KEY_MONTHS,
        region="us-east-1",
        metric="UnblendedCost",
        amount=Decimal("0.0333333333"),
        estimated=False,
        fetched_at=NOW,
    )
    aws.control("ce/dataset", {"rows": []})
    services.ingest_costs()
    assert list(stored()) == [("2026-09-30", A, "us-east-1-KMS-Keys")]


def test_limit_exceeded_is_retried_by_botocore_and_each_attempt_counted(aws, clock):
    aws.control("ce/dataset", {"rows": [row("2026-11-19", A, "us-east-1-KMS-Keys", "0.0333333333")], "page_size": 100})
    aws.fault(TARGET, "LimitExceededException", count=2)
    run = services.ingest_costs()
    assert run.status == CostRun.Status.SUCCEEDED and run.pages == 1
    assert run.requests == len(aws.requests(TARGET)) == 3
    assert CostRecord.objects.count() == 1


def test_a_query_whose_parameters_changed_between_pages_restarts_from_the_first_page(aws, clock):
    rows = [row(d, A, "us-east-1-KMS-Requests", "0.50") for d in days(date(2026, 10, 1), date(2026, 11, 21))]
    aws.control("ce/dataset", {"rows": rows, "page_size": 20})
    aws.control("ce/page-fault", {"page": 2, "error": "RequestChangedException", "count": 1})
    run = services.ingest_costs()
    assert run.restarts == 1
    # Pages 1, 2 (refused), then 1, 2, 3 again.
    assert run.requests == len(aws.requests(TARGET)) == 5
    assert run.pages == 4
    assert CostRecord.objects.count() == len(rows)


def test_restarts_are_bounded_and_a_failed_run_keeps_the_old_data_and_its_request_count(aws, clock):
    aws.control(
        "ce/dataset",
        {
            "rows": [row("2026-11-01", A, "us-east-1-KMS-Requests", "1.00")]
            + [row("2026-10-01", A, "us-east-1-KMS-Keys", "0.03")],
            "page_size": 40,
        },
    )
    services.ingest_costs()
    before = stored()
    aws.control("ce/dataset", {"rows": [], "page_size": 40})
    aws.control("ce/page-fault", {"page": 2, "error": "InvalidNextTokenException", "count": 50})
    with pytest.raises(CostExplorerError):
        services.ingest_costs()
    run = CostRun.objects.order_by("-pk").first()
    assert run.status == CostRun.Status.FAILED and "InvalidNextTokenException" in run.error
    assert run.restarts == MAX_RESTARTS
    assert run.requests == 2 * (MAX_RESTARTS + 1)
    assert stored() == before


def test_access_denied_is_not_retried(aws, clock):
    aws.fault(TARGET, "AccessDeniedException", count=5)
    with pytest.raises(CostExplorerError):
        services.ingest_costs()
    assert len(aws.requests(TARGET)) == 1
    assert CostRun.objects.get().requests == 1


@pytest.mark.parametrize(
    ("now", "window"),
    [
        (datetime(2026, 12, 1, 0, 5, tzinfo=UTC), (date(2026, 11, 1), date(2026, 12, 2))),
        (datetime(2027, 1, 1, 0, 0, tzinfo=UTC), (date(2026, 12, 1), date(2027, 1, 2))),
        (datetime(2026, 11, 30, 23, 59, tzinfo=UTC), (date(2026, 10, 1), date(2026, 12, 1))),
    ],
)
def test_the_window_follows_utc_month_boundaries(aws, now, window):
    aws.control("ce/dataset", {"rows": []})
    with time_machine.travel(now, tick=False):
        run = services.ingest_costs()
    assert (run.window_start, run.window_end) == window


def test_days_are_utc_dates_across_a_dst_change_in_the_display_time_zone(aws, settings):
    settings.TIME_ZONE = settings.KMSDASH_TIME_ZONE = "America/New_York"
    # 2026-11-01 is the US DST change; at 03:30 UTC it is still October 31 in New York.
    rows = [row(d, A, "us-east-1-KMS-Keys", "0.0333333333") for d in days(date(2026, 10, 30), date(2026, 11, 2))]
    aws.control("ce/dataset", {"rows": rows})
    with time_machine.travel(datetime(2026, 11, 1, 3, 30, tzinfo=UTC), tick=False):
        run = services.ingest_costs()
        run_again = services.ingest_costs()
    assert (run.window_start, run.window_end) == (date(2026, 10, 1), date(2026, 11, 2))
    assert run_again.rows == 3
    assert sorted(str(d) for d in CostRecord.objects.values_list("day", flat=True)) == [
        "2026-10-30",
        "2026-10-31",
        "2026-11-01",
    ]


def test_the_command_reads_an_explicit_window(aws, clock, capsys):
    aws.control(
        "ce/dataset",
        {
            "rows": [
                row("2026-06-15", A, "us-east-1-KMS-Requests", "4.20", estimated=False),
                row("2026-06-16", A, "us-east-1-KMS-Requests", "5.00", estimated=False),
            ]
        },
    )
    call_command("ingest_costs", "--since", "2026-06-15", "--until", "2026-06-15")
    assert stored() == {("2026-06-15", A, "us-east-1-KMS-Requests"): (Decimal("4.20"), False)}
    assert "1 Cost Explorer requests" in capsys.readouterr().out
    run = CostRun.objects.get()
    assert (run.window_start, run.window_end, run.via) == (date(2026, 6, 15), date(2026, 6, 16), "cli")


def test_the_cost_metric_is_configurable(aws, clock, settings):
    settings.KMSDASH_COST_METRIC = "AmortizedCost"
    aws.control("ce/dataset", {"rows": [row("2026-11-05", A, "us-east-1-KMS-Requests", "1.25")]})
    services.ingest_costs()
    record = CostRecord.objects.get()
    assert (record.metric, record.amount) == ("AmortizedCost", Decimal("1.25"))


def test_the_celery_task_runs_the_same_ingestion(aws, clock):
    from costs.tasks import ingest_costs

    aws.control("ce/dataset", {"rows": [row("2026-11-05", B, "eu-west-1-KMS-Requests-Asymmetric", "0.15")]})
    run_id = ingest_costs.apply().get()
    assert CostRun.objects.get(pk=run_id).via == "task"
    record = CostRecord.objects.get()
    assert (record.usage_class, record.region) == (UsageClass.ASYMMETRIC, "eu-west-1")


def test_a_run_finding_another_one_under_way_is_skipped_without_calling_aws(aws, clock):
    import threading

    from django.db import connection

    from kmsdash.locks import run_lock

    holding, release = threading.Event(), threading.Event()

    def hold():
        with run_lock(services.LOCK_NAME) as acquired:
            assert acquired
            holding.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    try:
        run = services.ingest_costs()
    finally:
        release.set()
        holder.join()
    assert run.status == CostRun.Status.SKIPPED and run.requests == 0
    assert aws.requests(TARGET) == []


def test_runs_stop_once_the_daily_request_budget_is_spent(aws, clock, settings):
    settings.KMSDASH_CE_DAILY_REQUEST_BUDGET = 4
    aws.control("ce/dataset", {"rows": [], "page_size": 20})  # three pages a run
    first = services.ingest_costs()
    second = services.ingest_costs()  # 3 spent < 4: allowed, and may overshoot by one run
    third = services.ingest_costs()
    assert [r.status for r in (first, second, third)] == ["succeeded", "succeeded", "skipped"]
    assert "budget" in third.error and third.requests == 0
    assert len(aws.requests(TARGET)) == 6


def test_cost_explorer_serves_only_the_filtered_service(aws, clock):
    aws.control(
        "ce/dataset",
        {"rows": [row("2026-11-05", A, "us-east-1-KMS-Requests", "1.25")], "service": "Amazon Simple Storage Service"},
    )
    assert services.ingest_costs().rows == 0
    assert CostRecord.objects.count() == 0


def test_the_emulator_answers_like_cost_explorer(aws):
    from botocore.exceptions import ClientError

    from kmsdash.aws import client

    aws.control(
        "ce/dataset",
        {
            "rows": [
                row("2026-11-01", A, "us-east-1-KMS-Requests", "0.1", estimated=False),
                row("2026-11-01", B, "us-east-1-KMS-Keys", "0.2", estimated=True),
                row("2026-11-02", A, "us-east-1-KMS-Requests", "0.3", estimated=False),
            ],
            "page_size": 1,
        },
    )
    ce = client("ce", "us-east-1", max_attempts=1)
    base = {
        "TimePeriod": {"Start": "2026-11-01", "End": "2026-11-03"},
        "Granularity": "DAILY",
        "Metrics": ["UnblendedCost", "UsageQuantity"],
    }
    first = ce.get_cost_and_usage(**base)
    assert first["ResultsByTime"][0]["Total"]["UnblendedCost"] == {"Amount": "0.3", "Unit": "USD"}
    assert first["ResultsByTime"][0]["Estimated"] is True and first["ResultsByTime"][0]["Groups"] == []
    second = ce.get_cost_and_usage(**base, NextPageToken=first["NextPageToken"])
    assert second["ResultsByTime"][0]["TimePeriod"] == {"Start": "2026-11-02", "End": "2026-11-03"}
    assert "NextPageToken" not in second

    grouped = ce.get_cost_and_usage(
        **base,
        GroupBy=[{"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"}],
        Filter={"Not": {"Dimensions": {"Key": "USAGE_TYPE", "Values": ["us-east-1-KMS-Keys"]}}},
    )
    assert grouped["ResultsByTime"][0]["Total"] == {}
    assert [g["Keys"] for g in grouped["ResultsByTime"][0]["Groups"]] == [[A]]
    assert grouped["ResultsByTime"][0]["Estimated"] is False

    def error_of(**params):
        with pytest.raises(ClientError) as caught:
            ce.get_cost_and_usage(**params)
        return caught.value.response["Error"]["Code"]

    changed = dict(base, Metrics=["BlendedCost"])
    assert error_of(**changed, NextPageToken=first["NextPageToken"]) == "RequestChangedException"
    assert error_of(**base, NextPageToken="not-a-token") == "InvalidNextTokenException"
    three = [{"Type": "DIMENSION", "Key": k} for k in ("USAGE_TYPE", "LINKED_ACCOUNT", "REGION")]
    assert error_of(**base, GroupBy=three) == "ValidationException"
    assert error_of(**dict(base, TimePeriod={"Start": "2026-11-03", "End": "2026-11-03"})) == "ValidationException"
