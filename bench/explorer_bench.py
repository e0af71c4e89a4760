"""What the events explorer costs the database: as served now, against the same filters with no
window and no summary pre-check (the explorer before both), over a large PostgreSQL database.

    python bench/explorer_bench.py --events 1000000 --requests 5

Loads synthetic events through the real ingestion path (bench/loading.py) into a dedicated
database, then for each filter times (a) a request to /events/ through the Django test client and
the whole middleware stack (statement timeout included, rendering included), (b) the query of its
first page now (`selectors.explorer_page`) and (c) the first page of the unwindowed queryset
(`EventFilter.events()`, what the explorer read before); medians of `--requests` runs each.
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

FILTERS = [
    ("search matching nothing (q=zzzz)", "q=zzzz"),
    ("operation matching nothing", "operation=ReplicateKey"),
    ("a rare operation", "operation=ScheduleKeyDeletion"),
    ("failed calls (error=any)", "error=any"),
    ("one error code", "error=AccessDenied"),
    ("a service", "service=s3.amazonaws.com"),
    ("an account and region", "account=444455556666&region=eu-west-1"),
    ("no filter", ""),
]


def timed(call, count: int) -> tuple[float, float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()

    url = os.environ.get("KMSDASH_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kmsdash_explorer_bench")
    ensure_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.db import connection
    from django.http import QueryDict
    from django.test import Client, override_settings

    from audits import selectors
    from audits.filters import EventFilter, explorer_window

    call_command("migrate", verbosity=0)
    if not args.skip_load:
        load(args.events, args.workers)
    settings.ALLOWED_HOSTS = ["testserver"]
    # Pages render without a collectstatic run (as in the tests).
    override_settings(
        STORAGES={
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
    ).enable()
    user, _ = User.objects.get_or_create(username="bench-analyst")
    user.groups.add(Group.objects.get(name="analyst"))
    client = Client()
    client.force_login(user)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), min(event_time), max(event_time) FROM audits_event")
        events, first, last = cursor.fetchone()
    print(
        f"\n{events:,} events from {first:%Y-%m-%d} to {last:%Y-%m-%d}; statement timeout "
        f"{settings.KMSDASH_STATEMENT_TIMEOUT_MS} ms; medians of {args.requests} runs, ms\n"
    )
    print(f"{'filter':36} {'page ms':>8} {'status':>6} {'query now':>10} {'query before':>13}")
    for name, query in FILTERS:
        path = f"/events/?{query}"
        client.get(path)  # warm
        statuses: set[int] = set()
        page = timed(lambda path=path, seen=statuses: seen.add(client.get(path).status_code), args.requests)

        def now(query=query):
            selectors.explorer_page(explorer_window(QueryDict(query))[0], None, 50)

        def before(query=query):
            selectors.events_page(EventFilter.from_querydict(QueryDict(query)).events(), None, 50)

        print(
            f"{name:36} {page[0]:8.1f} {','.join(map(str, sorted(statuses))):>6} "
            f"{timed(now, args.requests)[0]:10.1f} {timed(before, args.requests)[0]:13.1f}"
        )


if __name__ == "__main__":
    main()
