"""The alert page's figure: the scope's hourly calls with the baseline band, built with plotly.py
through audits.charts.figure (labels through audits.charts.label)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import plotly.graph_objects as go

from audits.charts import BASE_LAYOUT, figure, label


def hourly_with_baseline(
    hours: list[datetime], calls: list[int], medians: list[float], thresholds: list[float | None], *, name: str
) -> dict[str, Any]:
    x = [hour.isoformat() for hour in hours]
    data: list[go.Bar | go.Scatter] = []
    if any(t is not None for t in thresholds):
        # The band: from the baseline median up to the threshold, filled between the two lines.
        data.append(
            go.Scatter(
                mode="lines",
                name="Baseline (median)",
                x=x,
                y=medians,
                line={"width": 1, "color": "#7a869a"},
                hovertemplate="%{y:,.1f}<extra>median</extra>",
            )
        )
        data.append(
            go.Scatter(
                mode="lines",
                name="Threshold",
                x=x,
                y=thresholds,
                fill="tonexty",
                fillcolor="rgba(122,134,154,0.2)",
                line={"width": 1, "dash": "dot", "color": "#7a869a"},
                hovertemplate="%{y:,.1f}<extra>threshold</extra>",
            )
        )
    else:
        data.append(
            go.Scatter(mode="lines", name="Baseline (median)", x=x, y=medians, line={"width": 1, "color": "#7a869a"})
        )
    data.append(
        go.Bar(
            name=label(name),
            x=x,
            y=calls,
            hovertemplate="%{x|%Y-%m-%d %H:00}: %{y:,d}<extra></extra>",
        )
    )
    return figure(data, {**BASE_LAYOUT, "barmode": "overlay"})
