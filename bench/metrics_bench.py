"""Time of one /metrics scrape over a large PostgreSQL database, as the run ledger grows.

    python bench/metrics_bench.py --events 1000000 --runs 0,100000,1000000 --scrapes 20

Loads synthetic events through the real ingestion path (bench/loading.py, as pages_bench does) into
a dedicated database, then grows the run ledger (IngestRun rows, 5-minute runs over 20 account and
region scopes: a year of them is about 2 million) in steps and times full scrapes through the Django
test client with the bearer token, p50 and p95 per step. The first step, with the ledger the event
load left, is the baseline. A scrape never reads the events, so their number should not matter;
the ledger's size does (one GROUP BY and the health page's per-scope subqueries over it).

The database URL defaults to the local server; set KMSDASH_BENCH_DATABASE_URL to use another.
The broker is whatever CELERY_BROKER_URL says (the file broker by default).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loading import ensure_database, load  # noqa: E402

SCOPES = [(f"{100000000000 + n:012d}", region) for n in range(10) for region in ("us-east-1", "eu-west-1")]
TOKEN = "bench-metrics-token"


def grow_ledger(target: int) -> int:
    """Add scheduled runs until the ledger holds `target` of them (besides the event load's)."""
    from django.utils import timezone

    from audits.models import Checkpoint, IngestRun

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
    return IngestRun.objects.count()


def time_scrapes(scrapes: int) -> tuple[float, float, int]:
    from django.test import Client

    client = Client()
    client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})  # connections, imports
    timings = []
    size = 0
    for _ in range(scrapes):
        started = time.perf_counter()
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
        size = len(response.content)
    timings.sort()
    return statistics.median(timings), timings[max(0, int(len(timings) * 0.95) - 1)], size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
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

    call_command("migrate", verbosity=0)
    load(args.events, args.workers)
    from django.conf import settings

    if folder := settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in"):
        os.makedirs(str(folder), exist_ok=True)  # the file broker answers once its folder exists
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audits_event")
        events = cursor.fetchone()[0]
    print(f"\n{events:,} events; {args.scrapes} scrapes per step\n")
    print(f"{'ledger rows':>12} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>7}")
    for target in (int(size) for size in args.runs.split(",")):
        rows = grow_ledger(target) if target else 0
        if target:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE audits_ingestrun")
        else:
            from audits.models import IngestRun

            rows = IngestRun.objects.count()
        p50, p95, size = time_scrapes(args.scrapes)
        print(f"{rows:12,} {p50:8.1f} {p95:8.1f} {size:7,}", flush=True)


if __name__ == "__main__":
    main()
