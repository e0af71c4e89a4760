"""cost_report and the month figures equal Cost Explorer's dataset exactly, whatever it restates."""

from __future__ import annotations

import csv
import functools
import io
import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from costs import selectors, services
from kmsdash import aws as aws_clients

pytestmark = [pytest.mark.django_db, pytest.mark.emulator]

TARGET = "AWSInsightsIndexService.GetCostAndUsage"
NOW = datetime(2026, 11, 12, 15, 0, tzinfo=UTC)
ACCOUNTS = ("111122223333", "444455556666")
USAGE_TYPES = (
    "us-east-1-KMS-Keys",
    "us-east-1-KMS-Requests",
    "eu-west-1-KMS-Requests-Asymmetric",
    "Global-KMS-Requests",
    "<b>x</b>-KMS-Requests",
)


@functools.cache
def ce_client():
    # One real client for all examples: building a boto3 client dominates the run time otherwise.
    return aws_clients.client("ce", "us-east-1")


def report(*args: str) -> dict:
    out = io.StringIO()
    call_command("cost_report", *args, stdout=out)
    return json.loads(out.getvalue())


amounts = st.decimals(
    min_value=Decimal("-50"), max_value=Decimal("9999"), places=10, allow_nan=False, allow_infinity=False
) | st.decimals(min_value=0, max_value=100, places=2)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "date": st.dates(min_value=date(2026, 10, 1), max_value=date(2026, 11, 12)).map(str),
            "account": st.sampled_from(ACCOUNTS),
            "usage_type": st.sampled_from(USAGE_TYPES),
            "cost": amounts.map(str),
            "usage": st.integers(0, 10**9).map(str),
            "estimated": st.booleans(),
        }
    ),
    max_size=25,
)


@hypothesis_settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(restatements=st.lists(rows, min_size=1, max_size=4), page_size=st.integers(4, 60))
def test_the_report_equals_the_sums_of_the_last_restatement_exactly(aws, settings, restatements, page_size):
    settings.KMSDASH_CE_DAILY_REQUEST_BUDGET = 10**6  # every example runs on the same frozen day
    with time_machine.travel(NOW, tick=True):
        for dataset in restatements:
            aws.control("ce/dataset", {"rows": dataset, "page_size": page_size})
            services.ingest_costs(client=ce_client())
        got = report("--since", "2026-10-01", "--until", "2026-11-12")

    expected_total: dict[str, Decimal] = defaultdict(Decimal)
    expected_usage: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    expected_account: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    estimated: dict[str, bool] = defaultdict(bool)
    for item in restatements[-1]:
        cost = Decimal(item["cost"])
        expected_total[item["date"]] += cost
        expected_usage[item["date"]][item["usage_type"]] += cost
        expected_account[item["date"]][item["account"]] += cost
        estimated[item["date"]] |= item["estimated"]

    assert len(got["days"]) == 43
    for day in got["days"]:
        assert Decimal(day["total"]) == expected_total[day["date"]]
        assert {k: Decimal(v) for k, v in day["by_usage_type"].items()} == expected_usage.get(day["date"], {})
        assert {k: Decimal(v) for k, v in day["by_account"].items()} == expected_account.get(day["date"], {})
        assert day["estimated"] == estimated[day["date"]]
    november = sum((v for k, v in expected_total.items() if k >= "2026-11-01"), Decimal(0))
    assert Decimal(got["month_to_date"]) == november
    assert got["api_requests"] == len(aws.requests(TARGET))
    assert got["currency"] == "USD"


def test_the_csv_report_is_the_daily_table_with_numbers_left_numeric(aws):
    aws.control(
        "ce/dataset",
        {
            "rows": [
                {
                    "date": "2026-11-02",
                    "account": ACCOUNTS[0],
                    "usage_type": "=cmd|' /C calc'!A0",
                    "cost": "-12.34",
                    "usage": "3",
                    "estimated": True,
                },
                {
                    "date": "2026-11-02",
                    "account": ACCOUNTS[1],
                    "usage_type": "us-east-1-KMS-Requests",
                    "cost": "0.0300000001",
                    "usage": "10000",
                    "estimated": True,
                },
            ]
        },
    )
    with time_machine.travel(NOW, tick=True):
        services.ingest_costs()
        out = io.StringIO()
        call_command("cost_report", "--format", "csv", stdout=out)
    lines = list(csv.reader(io.StringIO(out.getvalue())))
    assert lines[0] == list(selectors.DAILY_TABLE_HEADER)
    assert lines[1][:3] == ["2026-11-02", ACCOUNTS[0], "'=cmd|' /C calc'!A0"]
    assert Decimal(lines[1][5]) == Decimal("-12.34") and not lines[1][5].startswith("'")
    assert Decimal(lines[2][5]) == Decimal("0.0300000001")
    assert lines[2][9] == "true"


def test_month_summary_compares_the_same_days_and_forecasts_from_the_last_week(aws):
    rows = []
    day = date(2026, 10, 1)
    while day <= date(2026, 11, 12):
        rows.append(
            {
                "date": str(day),
                "account": ACCOUNTS[0],
                "usage_type": "us-east-1-KMS-Requests",
                "cost": "2.00" if day.month == 10 else "3.00",
                "estimated": day.month == 11,
            }
        )
        day += timedelta(days=1)
    aws.control("ce/dataset", {"rows": rows, "page_size": 100})
    with time_machine.travel(NOW, tick=True):
        services.ingest_costs()
    summary = selectors.month_summary(date(2026, 11, 12))
    assert summary.month_to_date == Decimal("36.00")  # 12 days x 3.00
    assert summary.last_month_same_days == Decimal("24.00")  # October 1..12 x 2.00
    assert summary.change == Decimal(50)
    # 11 complete days x 3.00, then 19 days left (12th..30th) at the last week's average of 3.00.
    assert summary.forecast == Decimal("90.00")
    assert summary.estimated_days == 12


def test_money_keeps_every_place_cost_explorer_sent():
    assert selectors.money(Decimal("1.2345000000")) == "1.2345"
    assert selectors.money(Decimal("12.3")) == "12.30"
    assert selectors.money(Decimal("0E-10")) == "0.00"
    assert selectors.money(Decimal("-0.0000000001")) == "-0.0000000001"
