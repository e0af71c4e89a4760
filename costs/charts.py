"""Plotly figures as data for static/kmsdash/app.js; no HTML, no script.

Plotly renders trace names, category labels and hover text as its own pseudo-HTML, so every
label that comes from AWS (usage types, account names, tag values) goes through audits.charts.label
first, as every chart label does.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from audits.charts import label as chart_label

from .estimate import Reconciliation, TagCost
from .models import UsageClass
from .selectors import DayCost

ESTIMATED_PATTERN = "/"
BY_CHOICES = {"class": "usage class", "usage_type": "usage type", "account": "account", "region": "region"}


def _number(value: Decimal) -> float:
    # Chart heights only; every figure shown as text stays a Decimal.
    return float(round(value, 6))


def series_label(by: str, value: str, account_names: dict[str, str]) -> str:
    """The plain-text name of a chart series (escape it for Plotly with audits.charts.label)."""
    if by == "class":
        return str(UsageClass(value).label) if value in UsageClass.values else value
    if by == "account" and account_names.get(value):
        return f"{account_names[value]} ({value})"
    return value or "(none)"


def daily_figure(
    days: list[DayCost], series: dict[str, list[Decimal]], by: str, account_names: dict[str, str] | None = None
) -> dict[str, Any]:
    """Daily spend stacked by usage class, usage type, account or region; estimated days hatched."""
    x = [day.day.isoformat() for day in days]
    patterns = [ESTIMATED_PATTERN if day.estimated else "" for day in days]
    data = [
        {
            "type": "bar",
            "name": chart_label(series_label(by, label, account_names or {})),
            "x": x,
            "y": [_number(v) for v in values],
            "marker": {"pattern": {"shape": patterns}},
            "hovertemplate": "%{x}: $%{y:.4f}<extra>%{fullData.name}</extra>",
        }
        for label, values in series.items()
    ]
    return {
        "data": data,
        "layout": {
            "barmode": "stack",
            "height": 360,
            "margin": {"l": 56, "r": 16, "t": 24, "b": 40},
            "xaxis": {"type": "date"},
            "yaxis": {"title": {"text": "USD"}, "tickprefix": "$"},
            "legend": {"orientation": "h", "y": -0.15},
            "annotations": [
                {
                    "text": "hatched: estimated by AWS",
                    "xref": "paper",
                    "yref": "paper",
                    "x": 1,
                    "y": 1.06,
                    "showarrow": False,
                    "xanchor": "right",
                    "font": {"size": 11},
                }
            ],
        },
    }


def reconciliation_figure(recon: Reconciliation) -> dict[str, Any]:
    days = [d for d in recon.days if d.has_actual]
    x = [d.day.isoformat() for d in days]
    return {
        "data": [
            {
                "type": "bar",
                "name": "Cost Explorer (actual)",
                "x": x,
                "y": [_number(d.actual) for d in days],
                "marker": {"pattern": {"shape": [ESTIMATED_PATTERN if d.estimated else "" for d in days]}},
            },
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "Attributed to keys",
                "x": x,
                "y": [_number(d.attributed) for d in days],
            },
        ],
        "layout": {
            "height": 300,
            "margin": {"l": 56, "r": 16, "t": 16, "b": 40},
            "xaxis": {"type": "date"},
            "yaxis": {"tickprefix": "$"},
            "legend": {"orientation": "h", "y": -0.2},
        },
    }


def tag_figure(rows: list[TagCost]) -> dict[str, Any]:
    """Estimated cost per tag value, largest at the top."""
    shown = list(reversed(rows[:15]))
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "name": "Key-months",
                "y": [chart_label(r.value) for r in shown],
                "x": [_number(r.key_months) for r in shown],
            },
            {
                "type": "bar",
                "orientation": "h",
                "name": "Requests",
                "y": [chart_label(r.value) for r in shown],
                "x": [_number(r.request_cost) for r in shown],
            },
        ],
        "layout": {
            "barmode": "stack",
            "height": 80 + 28 * max(len(shown), 1),
            "margin": {"l": 200, "r": 16, "t": 8, "b": 32},
            "xaxis": {"tickprefix": "$"},
            "yaxis": {"type": "category", "automargin": True},
            "legend": {"orientation": "h", "y": -0.2},
        },
    }
