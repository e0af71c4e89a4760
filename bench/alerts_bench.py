"""Cost of alert evaluation per 10,000 new events over a large history, against their ingestion.

    python bench/alerts_bench.py --history 1000000 10000000 --rounds 7

Builds the history in bulk, then, at each size, runs rounds of 10,000 new events through the real
ingestion path (`ingest_records`, timed) and times the evaluation that judges them, in the same
run: the target is evaluation at most 5% of the ingestion time of the same events, and not growing
with the history. Medians over the rounds, with the generator's key-management calls and without.

The history: loading millions of events through the ingestion path takes hours here (~1,000
events/s), so it is built in bulk. TEMPLATES synthetic events over 90 days go through the real
ingestion path once; copies of them (the same keys, principals and raw records, new event ids,
each copy moved by whole days and some minutes within the 90 days, keeping its template's
after-hours flag) are then added with one INSERT ... SELECT generate_series per step, and every
summary is rebuilt from the events with the statements ingestion uses (GROUP BY over the events instead of over a
batch), so events and summaries agree as if every copy had been ingested. The rounds' events use
the history's keys and principals (the generator's seed 0, with fresh event ids), one day after
the history and each round a day later, so every detection reads its real baselines.

A dedicated PostgreSQL database (KMSDASH_BENCH_DATABASE_URL, created if missing) is reused: a run
on a database already holding a history tops it up to the next size.
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

from bench.loading import ensure_database  # noqa: E402

NEW = 10_000
TEMPLATES = 20_000
COPIES_PER_STEP = 25  # 500,000 events per INSERT
MANAGEMENT = {"PutKeyPolicy", "DisableKey", "ScheduleKeyDeletion"}
END = datetime(2026, 10, 1, tzinfo=UTC)  # the history's end; the rounds come after it


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def event_count() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audits_event")
        return cursor.fetchone()[0]


def build_history(target: int) -> None:
    """Bring the history to `target` events (see the module docstring)."""
    from django.db import connection, transaction

    from alerts.models import Evaluation
    from audits import synthetic
    from audits.ingest import EVENT_COLUMNS, finish_run, ingest_records, start_run
    from audits.models import AlertCandidate, IngestRun
    from audits.retention import settled_ids

    have = event_count()
    if have >= target:
        return
    began = time.perf_counter()
    if have == 0:
        run = start_run(IngestRun.Kind.FILES)
        records = synthetic.generate_records(TEMPLATES, seed=0, start=END - timedelta(days=90), days=90)
        finish_run(run, ingest_records(records, run=run))
        print(f"  {TEMPLATES:,} template events ingested in {time.perf_counter() - began:.0f} s", flush=True)
        have = TEMPLATES
    columns = ", ".join(EVENT_COLUMNS)
    # Copy g is the templates moved g days and 37 minutes later, wrapped around the 90 days: every day
    # and hour of the history then mixes many template days, as real traffic varies from day to day.
    moved = (
        "%(start)s::timestamptz + ((extract(epoch FROM t.event_time - %(start)s::timestamptz)::bigint"
        " + g * 88620) %% 7776000) * interval '1 second'"
    )
    copied = ", ".join(
        "t.event_id || '~' || g" if c == "event_id" else moved if c == "event_time" else f"t.{c}" for c in EVENT_COLUMNS
    )
    with connection.cursor() as cursor:
        # The templates are the first events ingested.
        cursor.execute("SELECT id FROM audits_event ORDER BY id LIMIT 1 OFFSET %s", [TEMPLATES - 1])
        (last_template,) = cursor.fetchone()
        cursor.execute(
            "SELECT coalesce(max(split_part(event_id, '~', 2)::int), 0) FROM audits_event WHERE event_id LIKE '%~%'"
        )
        (copies,) = cursor.fetchone()
    wanted = -(-(target - have) // TEMPLATES)
    for first in range(copies + 1, copies + wanted + 1, COPIES_PER_STEP):
        last = min(first + COPIES_PER_STEP - 1, copies + wanted)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO audits_event ({columns}) SELECT {copied} FROM audits_event t, "
                "generate_series(%(first)s, %(last)s) g WHERE t.id <= %(template)s",
                {"first": first, "last": last, "template": last_template, "start": END - timedelta(days=90)},
            )
        print(f"  copies {first}-{last}: {event_count():,} events, {time.perf_counter() - began:.0f} s", flush=True)
    rebuild_summaries()
    # The history counts as judged, as if every evaluation had run as it landed: the rounds' alerts
    # are the rounds' own.
    settled = settled_ids()
    assert settled is not None
    Evaluation.objects.update_or_create(pk=1, defaults={"event_id": settled[0], "candidate_id": settled[1]})
    AlertCandidate.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"  history of {event_count():,} events built in {time.perf_counter() - began:.0f} s", flush=True)


def rebuild_summaries() -> None:
    """Every summary again from the events, with ingestion's statements over all of them."""
    from django.db import connection, transaction

    from audits.rollups import DIMENSIONS, SUMMARIES

    returned = ", ".join(dim.sql if dim.sql == dim.column else f"{dim.sql} AS {dim.column}" for dim in DIMENSIONS)
    events = f"(SELECT event_time, encryption_context, {returned} FROM audits_event) AS e"
    for summary in SUMMARIES:
        began = time.perf_counter()
        counts = ", ".join(
            f"count(*) FILTER (WHERE {count.where})" if count.where else "count(*)" for count in summary.counts
        )
        where = f"WHERE {summary.counted[0]}" if summary.counted else ""
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {summary.table}")
            cursor.execute(
                f"INSERT INTO {summary.table} ({summary.dim_columns}, {summary.count_columns}, first_seen, last_seen) "
                f"SELECT {summary.dim_columns}, {counts}, min(event_time), max(event_time) FROM {events} {where} "
                f"GROUP BY {summary.dim_columns}"
            )
        print(f"    {summary.table}: {time.perf_counter() - began:.0f} s", flush=True)


def rounds(count: int, first_day: datetime, *, quiet: bool = False) -> list[tuple[float, float, int, int]]:
    """(ingest seconds, evaluation seconds, events judged, alerts touched) for each round.

    quiet: without the generator's key-management calls (0.35% of its events are key deletions,
    disablings and policy changes, a few dozen alerts every 10,000 events); grants stay."""
    from alerts.services import evaluate
    from audits import synthetic
    from audits.ingest import finish_run, ingest_records, start_run
    from audits.models import IngestRun

    out = []
    for n in range(count):
        start = first_day + timedelta(days=n)
        tag = f"r{start:%Y%m%d}"
        # Seed 0: the history's keys and principals; fresh event ids.
        records = list(synthetic.generate_records(NEW, seed=0, start=start, days=1, time_ordered=True))
        for i, record in enumerate(records):
            record["eventID"] = f"{tag}-{i}"
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
            f"{len(result.alerts)} alerts opened or grown; load {load_average()}",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--rounds", type=int, default=5)
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

    from audits.models import Event

    logging.getLogger("alerts").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)
    summary = []
    for size in sorted(args.history):
        print(f"history of {size:,} events (load {load_average()}):", flush=True)
        build_history(size)
        last = Event.objects.order_by("-event_time").values_list("event_time", flat=True).first()
        assert last is not None
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
            db_size = cursor.fetchone()[0]
        events = event_count()
        print(f"{events:,} events of history, database {db_size}; {args.rounds} rounds of {NEW:,} new events")
        day = (max(last, END) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        for quiet in (False, True):
            if quiet:
                print("without the generator's key-management calls:")
            results = rounds(args.rounds, day, quiet=quiet)
            day += timedelta(days=args.rounds)
            ingest = statistics.median(r[0] for r in results)
            evaluation = statistics.median(r[1] for r in results)
            verdict = "met" if evaluation <= 0.05 * ingest else "MISSED"
            line = (
                f"{events:,} events{' (quiet)' if quiet else ''}: ingest {ingest * 1000:.0f} ms, evaluate "
                f"{evaluation * 1000:.0f} ms per {NEW:,} new events (medians of {len(results)}): "
                f"{evaluation / ingest:.1%} of ingestion (target <= 5%: {verdict}); load {load_average()}"
            )
            print(line + "\n", flush=True)
            summary.append(line)
    print("\n".join(summary))


if __name__ == "__main__":
    main()
