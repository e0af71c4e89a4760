"""What building the pages' figures with plotly.py costs, against the plain-dict way in the same run.

    python bench/figures_bench.py [--repeat 200]

Builds each figure of the product from page-sized inputs (30 days of 8 operations, 7 days of
hours, 90 days of cost series, 15 days of an alert's hours) three ways:
  dict       the same chart functions with plotly.py taken out (traces and figure as plain dicts,
             what the product did before plotly.py): the baseline;
  go.Figure  go.Bar / go.Scatter traces put in a go.Figure (layout as a dict, plotly.py's default
             template left out), then to_plotly_json(): go.Figure validates each trace again;
  shipped    the functions as shipped: go.Bar / go.Scatter traces, validated once when built, and
             the layout validated as a go.Layout by audits.charts.figure, then to_plotly_json();
and prints ms per figure (median of --repeat builds in a warm process), plus the tojson filter's
serialisation of the result (the same for all, as the figures are equal: the script checks), and,
in a fresh process, the one-off cost of importing plotly.graph_objects and of the first figure of
each kind (plotly.py builds its validators lazily, once per process).

No database: the chart functions take selector output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")
    import django

    django.setup()


def cases() -> dict[str, Callable[[], dict[str, Any]]]:
    """Each figure of the product, with inputs the size of a busy page's."""
    from alerts import charts as alert_charts
    from audits import charts
    from costs import charts as cost_charts

    start = date(2026, 11, 1)
    per_day = [
        {"day": start + timedelta(days=d), "operation": f"Op{o}", "error_code": f"Error{o}", "calls": 1000 + 37 * o + d}
        for d in range(30)
        for o in range(12)
    ]
    now = datetime(2026, 11, 20, tzinfo=UTC)
    per_hour = [{"hour": now - timedelta(hours=h), "calls": 50 + h % 7, "failed": h % 3} for h in range(168, 0, -1)]
    days = [SimpleNamespace(day=start + timedelta(days=d), estimated=d > 85) for d in range(90)]
    series = {f"us-east-1-KMS-{n}": [Decimal("0.0312") * (d % 9 + 1) for d in range(90)] for n in range(6)}
    recon = SimpleNamespace(
        days=[
            SimpleNamespace(
                day=day.day, has_actual=True, estimated=day.estimated, actual=Decimal("3.25"), attributed=Decimal("2.9")
            )
            for day in days
        ]
    )
    tags = [SimpleNamespace(value=f"team-{n}", key_months=Decimal(n), request_cost=Decimal("0.42")) for n in range(20)]
    hours = [now - timedelta(hours=h) for h in range(360, 0, -1)]
    calls = [2 + h % 5 for h in range(360)]
    medians = [2.0] * 360
    thresholds: list[float | None] = [9.5] * 360
    return {
        "overview calls per day (8 of 12 series x 30 days)": lambda: charts.calls_by_operation(per_day),
        "overview failures per day (8 x 30)": lambda: charts.failures_by_error(per_day),
        "calls per hour (2 x 168 hours)": lambda: charts.calls_per_hour(per_hour),
        "cost per day (6 series x 90 days)": lambda: cost_charts.daily_figure(days, series, "usage_type"),  # type: ignore[arg-type]
        "cost reconciliation (2 x 90 days)": lambda: cost_charts.reconciliation_figure(recon),  # type: ignore[arg-type]
        "cost by tag (2 x 15 values)": lambda: cost_charts.tag_figure(tags),  # type: ignore[arg-type]
        "alert hours with baseline (3 x 360 hours)": lambda: alert_charts.hourly_with_baseline(
            hours, calls, medians, thresholds, name="Calls"
        ),
    }


MODULES = ("audits.charts", "costs.charts", "alerts.charts")


def patched(figure: Callable[..., dict[str, Any]], go: object = None) -> ExitStack:
    """The chart functions with another `figure` helper (and another `go`, if given)."""
    stack = ExitStack()
    for module in MODULES:
        stack.enter_context(mock.patch(f"{module}.figure", figure))
        if go is not None:
            stack.enter_context(mock.patch(f"{module}.go", go))
    return stack


def plain_dicts() -> ExitStack:
    """The chart functions as they were before plotly.py: traces and figures as plain dicts."""

    def trace(kind: str) -> Callable[..., dict[str, Any]]:
        return lambda **properties: {"type": kind, **properties}

    def figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> dict[str, Any]:
        return {"data": list(data), "layout": dict(layout)}

    return patched(figure, SimpleNamespace(Bar=trace("bar"), Scatter=trace("scatter")))


def in_a_go_figure() -> ExitStack:
    """The traces put in a go.Figure, which validates them again, without plotly.py's template."""
    import plotly.graph_objects as go

    empty = go.layout.Template()

    def figure(data: list[Any], layout: dict[str, Any]) -> dict[str, Any]:
        fig = go.Figure(data=data, layout={**layout, "template": empty}).to_plotly_json()
        del fig["layout"]["template"]
        return fig

    return patched(figure)


def median_ms(build: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        build()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def cold() -> None:
    """In a fresh process: importing plotly.graph_objects, then each figure's first build."""
    started = time.perf_counter()
    import plotly.graph_objects  # noqa: F401

    print(f"import plotly.graph_objects: {(time.perf_counter() - started) * 1000:.0f} ms")
    setup()
    for name, build in cases().items():
        started = time.perf_counter()
        build()
        print(f"first build, {name}: {(time.perf_counter() - started) * 1000:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold:
        cold()
        return 0

    setup()
    from audits.templatetags.kmsdash_tags import tojson

    builds = cases()
    for build in builds.values():  # warm: plotly.py's validators are built on first use
        build()
    print(f"median of {args.repeat} builds per figure, warm process")
    print(f"{'figure':<52} {'dict':>9} {'go.Figure':>9} {'shipped':>9} {'added':>9} {'tojson':>9}")
    added = []
    for name, build in builds.items():
        with plain_dicts():
            baseline = build()
            dict_ms = median_ms(build, args.repeat)
        with in_a_go_figure():
            whole = build()
            figure_ms = median_ms(build, args.repeat)
        shipped = build()
        if not baseline == whole == shipped:
            raise SystemExit(f"{name}: the three ways built different figures")
        shipped_ms = median_ms(build, args.repeat)
        tojson_ms = median_ms(lambda: tojson(shipped), args.repeat)  # noqa: B023
        added.append(shipped_ms - dict_ms)
        print(
            f"{name:<52} {dict_ms:>7.3f}ms {figure_ms:>7.3f}ms {shipped_ms:>7.3f}ms"
            f" {shipped_ms - dict_ms:>7.3f}ms {tojson_ms:>7.3f}ms"
        )
        assert json.loads(tojson(shipped)) == shipped
    print(f"validation adds {statistics.mean(added):.2f} ms per figure on average, {max(added):.2f} ms at most")
    print("fresh process:")
    sys.stdout.flush()
    subprocess.run([sys.executable, __file__, "--cold"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
