"""The alert page's figure: the scope's hourly calls with the baseline band, as a plotly dict
built the way audits/charts.py builds its figures (labels through audits.charts.label)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from audits.charts import BASE_LAYOUT, label


def hourly_with_baseline(
    hours: list[datetime], calls: list[int], medians: list[float], thresholds: list[float | None], *, name: str
) -> dict[str, Any]:
    x = [hour.isoformat() for hour in hours]
    data: list[dict[str, Any]] = []
    if any(t is not None for t in thresholds):
        # The band: from the baseline median up to the threshold, filled between the two lines.
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Baseline (median)",
                "x": x,
                "y": medians,
                "line": {"width": 1, "color": "#7a869a"},
                "hovertemplate": "%{y:,.1f}<extra>median</extra>",
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Threshold",
                "x": x,
                "y": [t if t is not None else None for t in thresholds],
                "fill": "tonexty",
                "fillcolor": "rgba(122,134,154,0.2)",
                "line": {"width": 1, "dash": "dot", "color": "#7a869a"},
                "hovertemplate": "%{y:,.1f}<extra>threshold</extra>",
            }
        )
    else:
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Baseline (median)",
                "x": x,
                "y": medians,
                "line": {"width": 1, "color": "#7a869a"},
            }
        )
    data.append(
        {
            "type": "bar",
            "name": label(name),
            "x": x,
            "y": calls,
            "hovertemplate": "%{x|%Y-%m-%d %H:00}: %{y:,d}<extra></extra>",
        }
    )
    layout = dict(BASE_LAYOUT)
    layout["barmode"] = "overlay"
    return {"data": data, "layout": layout}
