"""Cost of alert evaluation per 10,000 new events over a large history, against their ingestion.

    python bench/alerts_bench.py --events 1000000 --rounds 5

Loads N synthetic events over 90 days through the real ingestion path (bench/loading.py) into a
dedicated PostgreSQL database (created if missing, reused and topped up if already loaded), runs
one evaluation to bring the watermark to the end of the history (timed too: a first evaluation
judges everything), then, each round, ingests 10,000 new events (one day after the history, as
the generator spreads them) with `ingest_records` and times it, and times the evaluation that
judges them. The target: evaluation at most 5% of the ingestion time of the same events, and not
growing with the history.

The database URL defaults to the local server; set KMSDASH_BENCH_DATABASE_URL to use another.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loading import ensure_database, load  # noqa: E402

NEW = 10_000
MANAGEMENT = {"PutKeyPolicy", "DisableKey", "ScheduleKeyDeletion"}


def rounds(count: int, *, quiet: bool = False) -> list[tuple[float, float, int, int]]:
    """(ingest seconds, evaluation seconds, events judged, alerts touched) for each round.

    quiet: without the generator's key-management calls (0.35% of its events are key deletions,
    disablings and policy changes, a few dozen alerts every 10,000 events); grants stay."""
    from alerts.services import evaluate
    from audits import synthetic
    from audits.ingest import finish_run, ingest_records, start_run
    from audits.models import Event, IngestRun

    last = Event.objects.order_by("-event_time").values_list("event_time", flat=True).first()
    assert last is not None, "rounds() adds to a database that has its history already"
    out = []
    for n in range(count):
        start = (last + timedelta(days=1 + n)).replace(hour=0, minute=0, second=0, microsecond=0)
        # A seed the database has not seen (event ids are drawn from it): the highest id only grows.
        seed = Event.objects.order_by("-id").values_list("id", flat=True).first()
        assert seed is not None
        records = list(synthetic.generate_records(NEW, seed=seed, start=start, days=1, time_ordered=True))
        if quiet:
            records = [r for r in records if r["eventName"] not in MANAGEMENT]
        run = start_run(IngestRun.Kind.FILES)
        began = time.perf_counter()
        counts = ingest_records(records, run=run)
        ingest_seconds = time.perf_counter() - began
        finish_run(run, counts)
        began = time.perf_counter()
        result = evaluate()
        evaluate_seconds = time.perf_counter() - began
        assert result.status == "done" and result.events == counts.events_new == len(records), (result, counts)
        out.append((ingest_seconds, evaluate_seconds, result.events, len(result.alerts)))
        print(
            f"  round {n + 1}: ingest {ingest_seconds * 1000:7.1f} ms, evaluate {evaluate_seconds * 1000:6.1f} ms "
            f"({evaluate_seconds / ingest_seconds:5.1%}), {result.events:,} events judged, "
            f"{len(result.alerts)} alerts opened or grown",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()

    url = os.environ.get("KMSDASH_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kmsdash_alerts_bench")
    ensure_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")
    import django

    django.setup()
    import logging

    from django.core.management import call_command
    from django.db import connection

    logging.getLogger("alerts").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)
    if not args.skip_load:
        load(args.events, args.workers)
    from alerts.services import evaluate

    began = time.perf_counter()
    first = evaluate(chunk=100_000)
    print(
        f"catch-up evaluation: {first.events:,} events in {time.perf_counter() - began:,.1f} s "
        f"({first.opened} alerts opened)",
        flush=True,
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audits_event")
        events = cursor.fetchone()[0]
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    print(f"\n{events:,} events of history, database {size}; {args.rounds} rounds of {NEW:,} new events")
    for quiet in (False, True):
        if quiet:
            print("without the generator's key-management calls:")
        results = rounds(args.rounds, quiet=quiet)
        ingest = statistics.median(r[0] for r in results)
        evaluation = statistics.median(r[1] for r in results)
        verdict = "met" if evaluation <= 0.05 * ingest else "MISSED"
        print(
            f"median{' (quiet)' if quiet else ''}: ingest {ingest * 1000:.0f} ms, evaluate {evaluation * 1000:.0f} ms "
            f"per {NEW:,} new events: {evaluation / ingest:.1%} of ingestion (target <= 5%: {verdict}) "
            "\n"
        )


if __name__ == "__main__":
    main()
