"""Server time of the analysts' pages over a large PostgreSQL database.

    python bench/pages_bench.py --events 10000000 --requests 30

Loads synthetic KMS events through the real ingestion path (audits.ingest) into a dedicated
database (created if missing, reused and topped up if already loaded), then times each page with
the Django test client logged in as an analyst and prints p50/p95 per page.

The database URL defaults to the local server; set KMSDASH_BENCH_DATABASE_URL to use another.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loading import ensure_database, load  # noqa: E402

TARGETS_MS = {"overview": 150, "keys": 150, "key detail": 150, "explorer": 300}


def measure(requests: int) -> dict[str, tuple[int, float, float]]:
    from django.contrib.auth.models import Group, User
    from django.test import Client
    from django.urls import reverse

    from audits import selectors
    from audits.filters import EventFilter

    user, _ = User.objects.get_or_create(username="bench-analyst")
    user.groups.add(Group.objects.get(name="analyst"))
    client = Client()
    client.force_login(user)

    top = selectors.overview(EventFilter(), top=1).top_keys[0]
    principal = selectors.key_principals(EventFilter(key=top["key"]), limit=1)[0]["principal"]
    key_url = reverse("audits:key_detail", args=[top["key"]])
    # (name, url, measured): the pages with targets get `requests` requests, variants a few.
    pages = [
        ("overview", reverse("audits:overview"), requests),
        ("keys", reverse("audits:keys"), requests),
        ("key detail", key_url, requests),
        ("explorer", reverse("audits:events") + f"?key={top['key']}&error=any", requests),
        ("explorer by principal, after hours", reverse("audits:events") + f"?principal={principal}&after_hours=1", 5),
        ("explorer unfiltered", reverse("audits:events"), 5),
        ("critical", reverse("audits:critical"), 5),
        ("overview 90d", reverse("audits:overview") + "?period=90d", 3),
        ("keys 7d", reverse("audits:keys") + "?period=7d", 5),
        ("key detail 90d", key_url + "?period=90d", 5),
        # Filters the summaries cannot answer: the pages fall back to the full rollup table.
        ("overview by principal", reverse("audits:overview") + f"?principal={principal}", 5),
        ("overview failed only", reverse("audits:overview") + "?error=any", 5),
        ("keys by principal", reverse("audits:keys") + f"?principal={principal}", 5),
    ]
    results = {}
    for name, url, count in pages:
        assert client.get(url).status_code == 200, url  # warm caches and connections
        times = []
        for _ in range(count):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        p95 = statistics.quantiles(times, n=20, method="inclusive")[18] if count > 1 else times[0]
        results[name] = (count, statistics.median(times), p95)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--load-only", action="store_true")
    args = parser.parse_args()

    url = os.environ.get("KMSDASH_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kmsdash_pages_bench")
    ensure_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    if not args.skip_load:
        load(args.events, args.workers)
    if args.load_only:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audits_event")
        events = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM audits_dailyrollup")
        rollups = cursor.fetchone()[0]
        summaries = []
        for table in ("keyday", "operationday", "principalday", "keyprincipalday", "keyserviceday"):
            cursor.execute(f"SELECT count(*) FROM audits_{table}")
            summaries.append(f"{table} {cursor.fetchone()[0]:,}")
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    print(f"\n{events:,} events, {rollups:,} rollup rows, database {size}; {args.requests} requests per page")
    print(f"summary rows: {', '.join(summaries)}\n")
    print(f"{'page':40} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8}  target p95")
    for name, (count, p50, p95) in measure(args.requests).items():
        target = TARGETS_MS.get(name)
        verdict = "" if target is None else f"{'ok' if p95 <= target else 'MISSED'} (<= {target})"
        print(f"{name:40} {count:8} {p50:8.1f} {p95:8.1f}  {verdict}")


if __name__ == "__main__":
    main()
