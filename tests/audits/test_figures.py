"""Every chart of the product is a plotly.py figure (audits.charts.figure) sent as data: what each
page embeds is a figure plotly accepts, and attacker-chosen labels in it stay escaped text."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import plotly.graph_objects as go
import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from audits import charts
from audits.models import DailyRollup, Source
from costs.models import CostRecord
from costs.prices import classify_usage_type
from inventory.models import Key
from tests.audits.support import HOSTILE_ERROR, HOSTILE_ROLE, K1, NOW, ingest, record
from tests.support import embedded_figures as embedded
from tests.support import make_user
from tests.support import trace_names as names

pytestmark = pytest.mark.django_db

HOSTILE = '<img src=x onerror=alert(1)><a href="javascript:alert(2)">x</a>'
ESCAPED = charts.label(HOSTILE)


def test_the_helper_validates_every_property_against_plotlys_schema():
    with pytest.raises(ValueError, match="barmod"):
        charts.figure([go.Bar(x=[1], y=[1])], {"barmod": "stack"})
    with pytest.raises(ValueError, match="hovertemplat"):
        charts.figure([go.Bar(x=[1], y=[1], hovertemplat="%{y}")], {})


def test_a_figure_is_plain_json_data_without_plotly_pys_template():
    fig = charts.calls_by_operation([{"day": date(2026, 11, 1), "operation": "Decrypt", "calls": 3}])
    assert json.loads(json.dumps(fig)) == fig
    assert "template" not in fig["layout"]  # plotly.js's own defaults, as before plotly.py
    assert fig["data"] == [
        {
            "type": "bar",
            "name": "Decrypt",
            "x": ["2026-11-01"],
            "y": [3],
            "hovertemplate": "%{x|%Y-%m-%d}: %{y:,d}<extra>%{fullData.name}</extra>",
        }
    ]


def test_the_overview_and_key_pages_embed_valid_figures_with_hostile_labels_escaped(pages_analyst, pages_now):
    ingest(
        [
            record("Decrypt", role=HOSTILE_ROLE, error_code=HOSTILE_ERROR[:60], when=NOW - timedelta(hours=2)),
            record(HOSTILE[:40], when=NOW - timedelta(hours=1)),
        ]
    )
    overview = embedded(pages_analyst.get(reverse("audits:overview"), {"period": "24h"}).content.decode())
    assert set(overview) == {"fig-hourly", "fig-calls", "fig-failures"}
    assert names(overview["fig-failures"]) == [charts.label(HOSTILE_ERROR[:60])]
    assert charts.label(HOSTILE[:40]) in names(overview["fig-calls"])
    assert all("<img" not in name for fig in overview.values() for name in names(fig))
    fragment = pages_analyst.get(reverse("audits:key_detail", args=[K1]), {"period": "7d"}, HTTP_HX_REQUEST="true")
    key = embedded(fragment.content.decode())
    assert set(key) == {"fig-key-hourly", "fig-key-calls"}
    assert charts.label(HOSTILE[:40]) in names(key["fig-key-calls"])


def test_the_cost_page_embeds_valid_figures_with_hostile_labels_escaped(client):
    client.force_login(make_user("figures-finance", "finance"))
    account = "111122223333"
    with time_machine.travel(datetime(2026, 11, 20, 12, tzinfo=UTC), tick=True):
        Source.objects.create(account_id=account, name=HOSTILE)
        usage = f"{HOSTILE}-KMS-Requests"
        CostRecord.objects.create(
            day=date(2026, 11, 3),
            account_id=account,
            usage_type=usage,
            usage_class=classify_usage_type(usage).usage_class,
            region="us-east-1",
            metric="UnblendedCost",
            amount=Decimal("1.50"),
            estimated=True,
            fetched_at=timezone.now(),
        )
        Key.objects.create(
            arn=f"arn:aws:kms:us-east-1:{account}:key/00000000-0000-0000-0000-000000000000",
            key_id="00000000-0000-0000-0000-000000000000",
            account_id=account,
            region="us-east-1",
            key_manager="CUSTOMER",
            key_spec="SYMMETRIC_DEFAULT",
            key_state="Enabled",
            creation_date=datetime(2025, 1, 1, tzinfo=UTC),
            tags={"team": HOSTILE},
            last_seen_at=timezone.now(),
        )
        DailyRollup.objects.create(
            day=date(2026, 11, 3),
            account_id=account,
            region="us-east-1",
            key=f"arn:aws:kms:us-east-1:{account}:key/00000000-0000-0000-0000-000000000000",
            operation="Decrypt",
            principal=f"arn:aws:iam::{account}:role/app",
            service="",
            error_code="",
            after_hours=False,
            count=10,
            first_seen=timezone.now(),
            last_seen=timezone.now(),
        )
        period = {"since": "2026-11-01", "until": "2026-11-20"}
        page = embedded(client.get(reverse("costs:overview"), {**period, "by": "usage_type"}).content.decode())
        by_account = embedded(client.get(reverse("costs:overview"), {**period, "by": "account"}).content.decode())
    assert set(page) == {"cost-daily-figure", "cost-recon-figure", "cost-tag-figure"}
    assert names(page["cost-daily-figure"]) == [charts.label(usage)]
    assert names(by_account["cost-daily-figure"]) == [f"{ESCAPED} ({account})"]
    assert page["cost-tag-figure"].data[0].y == (ESCAPED,)
