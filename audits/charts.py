"""Plotly figures as plain dicts, built from selector output.

Templates embed them with the `tojson` filter (a data-figure-json attribute) and
static/kmsdash/app.js draws them. Every label that comes from AWS data, here and in the other
apps' charts, goes through `label()`: plotly.js renders a subset of HTML in text (links
included), so `<`, `>` and `&` become entities, which plotly shows as the literal characters.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from django.utils import timezone

from .templatetags.kmsdash_tags import visible

MAX_SERIES = 8
LABEL_MAX = 80
OTHER = "Other"

_SCHEME = re.compile(r"(?i)(javascript|data|vbscript)\s*:")

BASE_LAYOUT: dict[str, Any] = {
    "barmode": "stack",
    "height": 300,
    "margin": {"l": 48, "r": 16, "t": 8, "b": 40},
    "legend": {"orientation": "h", "y": -0.2},
    "xaxis": {"type": "date"},
    "yaxis": {"rangemode": "tozero", "tickformat": ",d"},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"family": "system-ui, sans-serif", "size": 12},
}


def label(value: object) -> str:
    """Plain text for a plotly label: control and bidi characters visible, no markup, no URL scheme."""
    text = visible(str(value))
    if len(text) > LABEL_MAX:
        text = text[: LABEL_MAX - 1] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SCHEME.sub(lambda m: m.group(1) + "\u2236", text)


def stacked_bars(rows: Iterable[dict[str, Any]], *, series: str, value: str = "calls") -> dict[str, Any]:
    """A stacked bar per day of `rows` ({day, <series>, <value>}), the largest series first.

    Beyond MAX_SERIES series, the smallest are summed into "Other".
    """
    by_series: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        by_series[row[series] or "(none)"][row["day"]] += row[value]
    ranked = sorted(by_series, key=lambda name: (-sum(by_series[name].values()), name))
    shown = [(label(name), by_series[name]) for name in ranked]
    if len(ranked) > MAX_SERIES:
        # Summed apart from the named series: a real series may be called "Other" too.
        other: dict[date, int] = defaultdict(int)
        for name in ranked[MAX_SERIES - 1 :]:
            for day, n in by_series[name].items():
                other[day] += n
        shown = shown[: MAX_SERIES - 1] + [(OTHER, other)]
    data = []
    for name, counts in shown:
        days = sorted(counts)
        data.append(
            {
                "type": "bar",
                "name": name,
                "x": [day.isoformat() for day in days],
                "y": [counts[day] for day in days],
                "hovertemplate": "%{x|%Y-%m-%d}: %{y:,d}<extra>%{fullData.name}</extra>",
            }
        )
    return {"data": data, "layout": dict(BASE_LAYOUT)}


def calls_by_operation(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return stacked_bars(rows, series="operation")


def failures_by_error(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return stacked_bars(rows, series="error_code")


def calls_per_hour(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Succeeded and failed calls per hour of `rows` ({hour, calls, failed}), stacked.

    Hours are shown in the site's time zone (KMSDASH_TIME_ZONE), as every time on the pages is;
    plotly reads a date-time without an offset as it is written."""
    hours: list[str] = []
    succeeded: list[int] = []
    failed: list[int] = []
    for row in rows:
        hour: datetime = timezone.localtime(row["hour"])
        hours.append(hour.strftime("%Y-%m-%d %H:%M"))
        succeeded.append(row["calls"] - row["failed"])
        failed.append(row["failed"])
    template = "%{x|%Y-%m-%d %H:00}: %{y:,d}<extra>%{fullData.name}</extra>"
    data = [
        {"type": "bar", "name": "Succeeded", "x": hours, "y": succeeded, "hovertemplate": template},
        {
            "type": "bar",
            "name": "Failed",
            "x": hours,
            "y": failed,
            "hovertemplate": template,
            "marker": {"color": "#b42318"},
        },
    ]
    return {"data": data, "layout": {**BASE_LAYOUT, "bargap": 0.1}}
