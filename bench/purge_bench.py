"""Retention purge benchmark: `purge_events` against a plain DELETE of the same rows, in one run.

    python bench/purge_bench.py [--events N] [--days-kept D] [--database-url postgres://...]

Loads N synthetic events over the 90 days before the run (time-ordered log files, as CloudTrail
writes them) through the real ingestion path into a fresh PostgreSQL database, copies that database
(CREATE DATABASE ... TEMPLATE), then measures:
  baseline  on the copy: one DELETE of the events older than the horizon (critical ones kept) and
            one of the raw blocks only they used, in a single transaction;
  purge     on the original: audits.retention.purge_events(days=D), one transaction per UTC day,
            each waiting for no ingest batch (nothing else runs);
and prints events deleted per second for both, what each left, and that `kms_report` over the whole
period is identical before and after the purge (rollups are never purged).

    $ python bench/purge_bench.py --events 300000 --days-kept 45     (2026-11-29, 2 shared cores)
    loaded 300,000 events, 300 raw blocks in 38s; database 269 MiB
    baseline  one DELETE            143,929 events in   0.47s    303,922 events/s
    purge     purge_events           143,929 events in   2.87s     50,235 events/s  (0.17 of baseline's rate)
              raw blocks: 0 deleted, 147 rewritten with the records of kept critical events only; raw records 23.0 -> 12.2 MiB
              kept 156,071 events (3,426 critical before the horizon), 300 raw blocks; kms_report identical before and after
    (another run: 47,312 against 238,918 events/s.) The purge's 45 one-day transactions, each
    finding its day, deleting, and rewriting the raw blocks that aged out, cost ~60 ms apiece at
    this size. The synthetic data holds ~2% critical events (grants among them), so every block of
    1,000 records keeps some: the aged blocks are rewritten rather than deleted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kmsdash_purge_bench"


def admin_execute(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def baseline_delete(url: str, horizon: datetime, critical: list[str]) -> tuple[int, float]:
    import psycopg

    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        deleted = conn.execute(
            "DELETE FROM audits_event WHERE event_time < %s AND NOT (event_name = ANY(%s))", [horizon, critical]
        ).rowcount
        conn.execute(
            "DELETE FROM audits_rawblock WHERE last_event_time < %s AND id NOT IN "
            "(SELECT raw_block_id FROM audits_event WHERE event_time < %s AND raw_block_id IS NOT NULL)",
            [horizon, horizon],
        )
        conn.commit()
        return deleted, time.perf_counter() - started


def database_mib(url: str) -> float:
    import psycopg

    with psycopg.connect(url) as conn:
        (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchall()[0]
        return size / 2**20


def raw_mib(url: str) -> float:
    import psycopg

    with psycopg.connect(url) as conn:
        (size,) = conn.execute("SELECT coalesce(sum(octet_length(data)), 0) FROM audits_rawblock").fetchall()[0]
        return size / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--days-kept", type=int, default=45)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG))
    args = parser.parse_args()
    url, copy_url = args.database_url, args.database_url + "_copy"
    name, copy_name = url.rsplit("/", 1)[1], copy_url.rsplit("/", 1)[1]
    admin_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("KMSDASH_LOG_LEVEL", "WARNING")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    from audits import retention, synthetic
    from audits.cloudtrail import CRITICAL_EVENT_NAMES
    from audits.ingest import Ingestor, bulk_gc, finish_run, start_run
    from audits.models import Event, IngestRun, RawBlock

    def report() -> dict:
        out = io.StringIO()
        call_command("kms_report", "--format", "json", "--since", "2000-01-01", stdout=out)
        return json.loads(out.getvalue())

    try:
        call_command("migrate", verbosity=0)
        now = datetime.now(UTC)
        started = time.perf_counter()
        run = start_run(IngestRun.Kind.FILES)
        ingestor = Ingestor(run, background_writes=True)
        records = synthetic.generate_records(
            args.events, seed=1, start=now - timedelta(days=90), days=90, time_ordered=True
        )
        with bulk_gc():
            for record in records:
                ingestor.add(record)
            ingestor.flush()
        finish_run(run, ingestor.counts)
        print(
            f"loaded {Event.objects.count():,} events, {RawBlock.objects.count():,} raw blocks in "
            f"{time.perf_counter() - started:.0f}s; database {database_mib(url):.0f} MiB"
        )
        before = report()
        raw_before = raw_mib(url)
        horizon = retention.horizon(days=args.days_kept, now=now)
        assert horizon is not None  # --days-kept is a number of days
        connections.close_all()  # a template database must have no other connection
        admin_execute(
            url,
            f'DROP DATABASE IF EXISTS "{copy_name}" WITH (FORCE)',
            f'CREATE DATABASE "{copy_name}" TEMPLATE "{name}"',
        )

        deleted, seconds = baseline_delete(copy_url, horizon, sorted(CRITICAL_EVENT_NAMES))
        print(
            f"baseline  one DELETE          {deleted:>9,} events in {seconds:6.2f}s  "
            f"{deleted / seconds:>9,.0f} events/s"
        )

        started = time.perf_counter()
        result = retention.purge_events(days=args.days_kept, now=now)
        seconds_purge = time.perf_counter() - started
        print(
            f"purge     purge_events         {result.events:>9,} events in {seconds_purge:6.2f}s  "
            f"{result.events / seconds_purge:>9,.0f} events/s  ({seconds / seconds_purge:.2f} of baseline's "
            f"rate)"
        )
        print(
            f"          raw blocks: {result.raw_blocks:,} deleted, {result.raw_blocks_rewritten:,} rewritten with the "
            f"records of kept critical events only; raw records {raw_before:.1f} -> {raw_mib(url):.1f} MiB"
        )
        kept = Event.objects.count()
        assert result.events == deleted, (result.events, deleted)
        assert report() == before, "a purge changed a count"
        print(
            f"          kept {kept:,} events ({Event.objects.filter(event_time__lt=horizon).count():,} critical "
            f"before the horizon), {RawBlock.objects.count():,} raw blocks; kms_report identical before and after"
        )
    finally:
        connections.close_all()
        admin_execute(
            url, f'DROP DATABASE IF EXISTS "{copy_name}" WITH (FORCE)', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        )


if __name__ == "__main__":
    main()
