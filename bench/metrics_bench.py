"""Time of one /metrics scrape as the ledgers grow: the totals (now) against the ledger aggregates
(before), in the same run on the same database.

    python bench/metrics_bench.py --events 0 --runs 0,100000,1000000 --scrapes 20

Optionally loads synthetic events through the real ingestion path (bench/loading.py, as pages_bench
does; a scrape never reads them, so `--events 0` is the quick default), then grows the run ledger
(IngestRun rows, 5-minute runs over 20 account and region scopes, 1 % failed: a year of them is
about 2 million) and the delivery ledger (a notification and an attempt per 20 runs) in steps. The
rows are bulk-inserted, not written by the ingestion and delivery code, so after each step the
totals are rebuilt from the ledgers with the backfill's own function (kmsdash.totals.rebuild).

Each step times today's collector and the same collector with its counters and ingestion health
computed the way they were before totals (`BeforeTotals`, below: a GROUP BY over each ledger, and
the health page's per-scope subqueries after a GROUP BY over the run ledger), both rendered by
prometheus_client, and today's full scrape through the Django test client with the bearer token
(middleware and view included), alternating scrape by scrape so all see the same machine. p50 and
p95 of each.

The database URL defaults to the local server; set KMSDASH_BENCH_DATABASE_URL to use another.
The broker is whatever CELERY_BROKER_URL says (the file broker by default): the same in both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loading import ensure_database, load  # noqa: E402

SCOPES = [(f"{100000000000 + n:012d}", region) for n in range(10) for region in ("us-east-1", "eu-west-1")]
TOKEN = "bench-metrics-token"


def grow_ledgers(target: int) -> int:
    """Add scheduled runs until the ledger holds `target` of them (besides the event load's), and a
    notification with one finished attempt for every 20 runs."""
    from django.utils import timezone

    from audits.models import Checkpoint, IngestRun
    from notify.models import Channel, DeliveryAttempt, Notification

    have = IngestRun.objects.filter(kind__in=["lookup", "s3"]).count()
    now = timezone.now()
    batch: list[IngestRun] = []
    for n in range(have, target):
        account, region = SCOPES[n % len(SCOPES)]
        status = "failed" if n % 97 == 0 else "succeeded"
        batch.append(
            IngestRun(
                kind="lookup" if n % 2 else "s3",
                account_id=account,
                region=region,
                status=status,
                finished_at=now - timedelta(minutes=5 * (target - n) // len(SCOPES)),
                events_new=n % 400,
                quarantined=1 if n % 1000 == 0 else 0,
            )
        )
        if len(batch) == 20_000:
            IngestRun.objects.bulk_create(batch)
            batch = []
    IngestRun.objects.bulk_create(batch)
    for n, (account, region) in enumerate(SCOPES):
        for kind in ("lookup", "s3"):
            Checkpoint.objects.update_or_create(
                kind=kind,
                account_id=account,
                region=region,
                defaults={"high_watermark": datetime.now(UTC) - timedelta(minutes=n)},
            )

    hook, _ = Channel.objects.get_or_create(name="bench-hook", defaults={"type": "webhook", "target": "https://h"})
    have = Notification.objects.count()
    for start in range(have, target // 20, 10_000):
        notes = [
            Notification(
                channel=hook,
                alert_id=n,
                event="opened",
                payload={},
                state="delivered" if n % 50 else "failed",
                finished_at=now,
            )
            for n in range(start, min(start + 10_000, target // 20))
        ]
        Notification.objects.bulk_create(notes)
        DeliveryAttempt.objects.bulk_create(
            DeliveryAttempt(
                notification=note, channel=hook, number=1, started_at=now, finished_at=now, ok=note.state != "failed"
            )
            for note in notes
        )
    return IngestRun.objects.count()


def before_totals_collector():
    """The collector as it was before totals: counters aggregated over the ledgers at every scrape,
    and ingestion health finding each scope's newest run by a GROUP BY over the whole run ledger."""
    from django.db.models import Count, Max, OuterRef, Subquery, Sum
    from django.utils import timezone
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from audits.models import Checkpoint, IngestRun, Source
    from audits.selectors import _UNFINISHED
    from kmsdash.metrics import KmsdashCollector
    from notify.models import DeliveryAttempt, Notification

    def lags(now) -> Iterator[tuple[tuple[str, str, str], float]]:
        same_scope = IngestRun.objects.filter(
            kind=OuterRef("kind"), account_id=OuterRef("account_id"), region=OuterRef("region")
        ).order_by("-started_at", "-id")
        one_per_scope = IngestRun.objects.order_by().values("kind", "account_id", "region").annotate(newest=Max("id"))
        per_scope = (
            IngestRun.objects.order_by()
            .filter(id__in=one_per_scope.values("newest"))
            .values("kind", "account_id", "region")
            .annotate(
                last_run_id=Subquery(same_scope.values("id")[:1]),
                last_finished_status=Subquery(same_scope.exclude(status__in=_UNFINISHED).values("status")[:1]),
                last_failure_id=Subquery(same_scope.filter(status=IngestRun.Status.FAILED).values("id")[:1]),
                last_success_at=Subquery(
                    same_scope.filter(status=IngestRun.Status.SUCCEEDED).values("finished_at")[:1]
                ),
            )
        )
        rows = {(r["kind"], r["account_id"], r["region"]): r for r in per_scope}
        run_ids = {r[name] for r in rows.values() for name in ("last_run_id", "last_failure_id") if r[name]}
        IngestRun.objects.in_bulk(run_ids)
        watermarks = {(c.kind, c.account_id, c.region): c.high_watermark for c in Checkpoint.objects.all()}
        configured = {(str(kind), account, region) for kind, account, region in Source.objects.scopes()}
        for scope in sorted(set(rows) | set(watermarks) | configured):
            reference = watermarks.get(scope) or rows.get(scope, {}).get("last_success_at")
            if reference:
                yield scope, (now - reference).total_seconds()

    class BeforeTotals(KmsdashCollector):
        def collect(self):
            yield from self.ingestion()
            yield from self.deliveries()
            yield from self.broker()

        def ingestion(self):
            lag = GaugeMetricFamily("kmsdash_ingest_lag_seconds", "lag", labels=["source", "account", "region"])
            for scope, seconds in lags(timezone.now()):
                lag.add_metric(list(scope), seconds)
            events = CounterMetricFamily("kmsdash_events_ingested", "events", labels=["source"])
            quarantined = CounterMetricFamily("kmsdash_records_quarantined", "quarantined", labels=["source"])
            runs = CounterMetricFamily("kmsdash_ingest_runs", "runs", labels=["source", "status"])
            running = GaugeMetricFamily("kmsdash_ingest_runs_running", "running", labels=["source"])
            rows = (
                IngestRun.objects.order_by()
                .values("kind", "status")
                .annotate(n=Count("id"), events=Sum("events_new", default=0), bad=Sum("quarantined", default=0))
            )
            for row in rows:
                events.add_metric([row["kind"]], row["events"])
                quarantined.add_metric([row["kind"]], row["bad"])
                if row["status"] == "running":
                    running.add_metric([row["kind"]], row["n"])
                else:
                    runs.add_metric([row["kind"], row["status"]], row["n"])
            yield from (lag, events, quarantined, runs, running)

        def deliveries(self):
            notifications = GaugeMetricFamily("kmsdash_alert_notifications", "n", labels=["channel_type", "state"])
            for r in Notification.objects.order_by().values("channel__type", "state").annotate(n=Count("id")):
                notifications.add_metric([r["channel__type"], r["state"]], r["n"])
            attempts = CounterMetricFamily("kmsdash_alert_delivery_attempts", "a", labels=["channel_type", "outcome"])
            finished = DeliveryAttempt.objects.filter(ok__isnull=False).order_by().values("channel__type", "ok")
            for r in finished.annotate(n=Count("id")):
                attempts.add_metric([r["channel__type"], "succeeded" if r["ok"] else "failed"], r["n"])
            yield from (notifications, attempts)

    return BeforeTotals()


def timed(scrapes: int, ways: dict[str, Callable[[], int]]) -> dict[str, tuple[float, float, int]]:
    """p50 and p95 in ms and the bytes of each way's scrape, the ways alternating scrape by scrape."""
    for scrape in ways.values():
        scrape()  # connections, imports, plans
    timings: dict[str, list[float]] = {name: [] for name in ways}
    size = dict.fromkeys(ways, 0)
    for _ in range(scrapes):
        for name, scrape in ways.items():
            started = time.perf_counter()
            size[name] = scrape()
            timings[name].append((time.perf_counter() - started) * 1000)
    result = {}
    for name, values in timings.items():
        values.sort()
        result[name] = (statistics.median(values), values[max(0, int(len(values) * 0.95) - 1)], size[name])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=0, help="events to load first (a scrape never reads them)")
    parser.add_argument("--runs", default="0,100000,1000000", help="ledger sizes to time, ascending")
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    args = parser.parse_args()

    url = os.environ.get("KMSDASH_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kmsdash_metrics_bench")
    ensure_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ["KMSDASH_METRICS_TOKEN"] = TOKEN
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from audits.models import IngestRun
    from kmsdash import totals
    from kmsdash.metrics import KmsdashCollector

    call_command("migrate", verbosity=0)
    if args.events:
        load(args.events, args.workers)
    from django.conf import settings

    if folder := settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in"):
        os.makedirs(str(folder), exist_ok=True)  # the file broker answers once its folder exists
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audits_event")
        events = cursor.fetchone()[0]
    client = Client()
    before = CollectorRegistry(auto_describe=False)
    before.register(before_totals_collector())

    def now_http() -> int:
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.status_code
        return len(response.content)

    now = CollectorRegistry(auto_describe=False)
    now.register(KmsdashCollector())
    ways = {
        "totals (now)": lambda: len(generate_latest(now)),
        "aggregates (before)": lambda: len(generate_latest(before)),
        "totals, over HTTP": now_http,
    }
    print(f"\n{events:,} events; {args.scrapes} scrapes per step and way; load {open('/proc/loadavg').read()}")
    print(f"{'ledger rows':>12} {'way':<20} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>7}")
    for target in (int(size) for size in args.runs.split(",")):
        rows = grow_ledgers(target) if target else IngestRun.objects.count()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE audits_ingestrun")
            cursor.execute("ANALYZE notify_notification")
            cursor.execute("ANALYZE notify_deliveryattempt")
        totals.rebuild()  # the rows above were bulk-inserted: the backfill's sums, as after migrating
        assert totals.read() == totals.from_ledgers()
        for name, (p50, p95, size) in timed(args.scrapes, ways).items():
            print(f"{rows:12,} {name:<20} {p50:8.1f} {p95:8.1f} {size:7,}", flush=True)
    print(f"load {open('/proc/loadavg').read()}")


if __name__ == "__main__":
    main()
