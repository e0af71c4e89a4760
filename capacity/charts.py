"""The capacity page's figures as plotly dicts, built the way audits/charts.py builds its own
(labels through audits.charts.label). Each figure is one function, so that the conversion to
plotly.graph_objects touches one place per figure."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from audits.charts import BASE_LAYOUT, label

from .selectors import Peak, iso_minute


def headroom(peaks: list[Peak], *, threshold: float) -> dict[str, Any]:
    """One account and region: each quota class's peak rate per bucket as a share of its quota, with
    the quota (100%) and the alert threshold as lines. Hover names the minute, the rate and the quota."""
    by_class: dict[str, list[Peak]] = defaultdict(list)
    for peak in peaks:
        if peak.quota:
            by_class[peak.quota_class].append(peak)
    data: list[dict[str, Any]] = []
    xs: list[str] = []
    for quota_class, series in sorted(by_class.items()):
        x = [(p.bucket or p.minute).isoformat() for p in series]
        xs += x
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": label(quota_class),
                "x": x,
                "y": [round(100 * (p.share or 0), 2) for p in series],
                "customdata": [[iso_minute(p.minute), p.rate, p.quota] for p in series],
                "hovertemplate": "%{customdata[0]}: %{customdata[1]:,.1f}/s of %{customdata[2]:,.0f}/s"
                "<extra>" + label(quota_class) + "</extra>",
            }
        )
    if xs:
        ends = [min(xs), max(xs)]
        for name, level, dash in (("Quota", 100, "solid"), ("Alert threshold", 100 * threshold, "dot")):
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": name,
                    "x": ends,
                    "y": [level, level],
                    "line": {"width": 1, "dash": dash, "color": "#b3261e" if name == "Quota" else "#7a869a"},
                    "hoverinfo": "skip",
                }
            )
    layout = dict(BASE_LAYOUT)
    layout["yaxis"] = {"rangemode": "tozero", "ticksuffix": "%", "title": {"text": "peak rate / quota"}}
    return {"data": data, "layout": layout}


def throttled(minutes: list[tuple[datetime, int]]) -> dict[str, Any]:
    """ThrottlingException calls per minute of one account and region (the minutes that had some)."""
    layout = dict(BASE_LAYOUT)
    return {
        "data": [
            {
                "type": "bar",
                "name": "ThrottlingException",
                "x": [minute.isoformat() for minute, _ in minutes],
                "y": [n for _, n in minutes],
                "marker": {"color": "#b3261e"},
                "hovertemplate": "%{x|%Y-%m-%d %H:%M}: %{y:,d}<extra></extra>",
            }
        ],
        "layout": layout,
    }
