"""Ingestion benchmark: import_cloudtrail end to end, against a same-run baseline.

    python bench/ingest_bench.py [--events N] [--database-url postgres://...] [--no-sqlite] [--parse-only]
                                 [--compare-quota-summaries]

Generates N synthetic KMS events (audits.synthetic) as CloudTrail .json.gz log files in a temporary
directory, then measures in one run:
  baseline  decompress + json.loads of the files; iter_file_records (the importer's reader); and
            decompress + parse + COPY of the extracted rows into a bare PostgreSQL table (no index);
  import    `manage.py import_cloudtrail DIR` into a fresh PostgreSQL database (created and dropped
            here) and into a fresh SQLite file, each in its own process (peak RSS is that process's).
For each: events/s, ratio to the baseline, peak RSS, stored bytes per event (all audits tables
and their indexes: pg_total_relation_size; SQLite: dbstat).
--compare-quota-summaries: the PostgreSQL import twice, in the same run, without and then with the
per-minute request-quota summary (QuotaMinute: left out of the write path by the child process
only), with its bytes per event and the events' quota_class column's.

Output format, and the latest figures (2 cores shared with other jobs and the PostgreSQL server,
default server settings: shared_buffers 128 MB; events/s are wall clock and follow the machine's
load; CPU per event is the steadier figure). The baseline parses with orjson, as the importer does.

    $ python bench/ingest_bench.py --events 500000          (2026-11-29, load average ~1)
        generated 500000 events at random times in 500 files (106 B/event gzipped) in 42.7s
        baseline  decompress+orjson.loads        164,694 events/s  cpu 6 us/event
                  decompress+json.loads          116,551 events/s  cpu 9 us/event
                  decompress+iter_file_records   101,288 events/s  cpu 10 us/event  (0.62x orjson.loads)
        baseline  parse+COPY to a bare table      60,159 events/s  cpu 15 us/event
        import    postgresql    18,821 events/s  ratio 0.31 of baseline  cpu 43 us/event (ratio 0.35)
                  peak RSS 158 MiB  stored 814 B/event (raw 85)  events 500000
                  largest parts, B/event: audits_event (heap) 454, audits_rawblock 85, audits_dailyrollup 68,
                  event_key_time 41, event_principal_time 40, event_time_id 40
        import    sqlite         7,493 events/s  ratio 0.12 of baseline  cpu 127 us/event (ratio 0.12)
                  peak RSS 133 MiB  stored 935 B/event (raw 82)  events 500000
    $ python bench/ingest_bench.py --events 500000 --time-ordered --no-sqlite
        generated 500000 events in time order in 500 files (101 B/event gzipped) in 42.0s
        baseline  parse+COPY to a bare table      60,899 events/s  cpu 14 us/event
        import    postgresql    25,633 events/s  ratio 0.42 of baseline  cpu 37 us/event (ratio 0.38)
                  peak RSS 160 MiB  stored 794 B/event (raw 83)  events 500000
    (--events 100000 --time-ordered: 23,916 events/s, peak RSS 158 MiB: flat.)
    Random times across 30 days in every file (the default) are the worst case: every batch adds to
    every day's rollups. CloudTrail writes each log file for a few minutes of one account and
    region, which --time-ordered imitates. Runs of the same code move by ~10% with the machine's
    load (random times: 16,000 to 18,800 events/s); the same-run baseline between 35,000 and 63,000
    events/s from session to session, so the ratio is the least stable figure.
    History (random times): 7,300-10,900 events/s and 1,334 B/event with a zlib blob per record;
    16,400-17,800 and 907 B/event before the hashed unique keys and the faster parser.

    Where the time goes (PostgreSQL, 100,000 events at random times, 5.7 s without start-up): the
    writer thread is busy 5.3 s, 4.7 s of it in the COPY and the one INSERT statement (EXPLAIN
    ANALYZE of a 10,000-event batch, ~420 ms: the event insert with its 5 indexes ~200, the rollup
    upsert ~105 for ~6,000 rows, the six narrower summaries ~80); the parsing thread (37-43 us of
    Python CPU per event: gunzip + orjson ~7, parse_record ~11, the raw record's compact JSON ~4)
    waits 2.3 s of it for the writer, and the machine's two cores are 1.4 busy. So PostgreSQL's
    per-batch statement bounds the import: time-ordered files touch far fewer rollup rows per
    batch, hence 25,600 against 18,800 events/s. The raw blocks are compressed while that statement
    runs (zstd releases the GIL). Python's cyclic GC took a quarter of the CPU with default
    thresholds (audits.ingest.bulk_gc raises them during bulk ingestion).

    Where the bytes go (500k, random times): the event row 454 B (key and principal ARNs ~120,
    encryption context ~46, event and request ids ~74, user agent, source IP, session, account ids,
    types), raw records 81-85 (zstd level 6 over blocks of 1,000 records), the unique (account,
    event id) index 40 (16 bytes of a SHA-256 per entry; on the text it was 100), the key,
    principal and time indexes ~40 each (~32 with time-ordered files), the primary key 22, the
    rollup and summary tables ~90. Even with every repeated text as an integer id and the detail
    fields read from the raw record, a row would keep ~100-130 B and the five indexes the pages
    need 158-183: with the raw records and integer-id rollups, 383-445 B. See the README.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kmsdash_bench"
START = datetime(2026, 10, 1, tzinfo=UTC)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(directory: Path, events: int, per_file: int, time_ordered: bool, days: int = 30) -> list[Path]:
    from audits.synthetic import generate_records, write_log_files

    records = generate_records(events, seed=1, start=START, days=days, time_ordered=time_ordered)
    return write_log_files(records, directory, per_file=per_file)


def baseline_parse(files: list[Path], loads=orjson.loads) -> tuple[int, float, float]:
    count = 0
    started, cpu = time.perf_counter(), time.process_time()
    for path in files:
        count += len(loads(gzip.decompress(path.read_bytes()))["Records"])
    return count, time.perf_counter() - started, time.process_time() - cpu


def baseline_ijson(files: list[Path]) -> tuple[int, float, float]:
    import django

    django.setup()
    from audits.sources.files import iter_file_records

    count = 0
    started, cpu = time.perf_counter(), time.process_time()
    for path in files:
        with path.open("rb") as stream:
            count += sum(1 for _ in iter_file_records(stream, name=str(path), max_decompressed=1 << 34))
    return count, time.perf_counter() - started, time.process_time() - cpu


def baseline_copy(files: list[Path], url: str) -> tuple[int, float, float]:
    """The floor for any loader: read, parse (orjson, as the importer), and COPY the rows and each
    record's text into a table with no index."""
    import psycopg

    count = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_bare")
        conn.execute(
            "CREATE UNLOGGED TABLE bench_bare (account text, event_id text, event_time timestamptz, "
            "event_name text, region text, key text, principal text, error_code text, raw text)"
        )
        started, cpu = time.perf_counter(), time.process_time()
        with conn.cursor() as cursor:
            for path in files:
                records = orjson.loads(gzip.decompress(path.read_bytes()))["Records"]
                with cursor.copy(
                    "COPY bench_bare (account, event_id, event_time, event_name, region, key, principal, "
                    "error_code, raw) FROM STDIN"
                ) as copy:
                    for r in records:
                        copy.write_row(
                            (
                                r["recipientAccountId"],
                                r["eventID"],
                                r["eventTime"],
                                r["eventName"],
                                r["awsRegion"],
                                (r.get("resources") or [{}])[0].get("ARN", ""),
                                r["userIdentity"].get("arn", ""),
                                r.get("errorCode", ""),
                                orjson.dumps(r).decode(),
                            )
                        )
                count += len(records)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        conn.execute("DROP TABLE bench_bare")
    return count, elapsed, cpu


def recreate_pg_database(url: str, *, drop_only: bool = False) -> None:
    import psycopg
    from psycopg import sql

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if not drop_only:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# -- child process: one import into one database -----------------------------------------------


QUOTA_SUMMARIES = "QuotaMinute"


def leave_out_summaries(names: set[str]) -> None:
    """The write path without the summaries of these models (the benchmark's "without" run only)."""
    from audits import ingest, rollups

    kept = tuple(summary for summary in rollups.SUMMARIES if summary.model.__name__ not in names)
    dimensions = tuple({dim.column: dim for summary in kept for dim in summary.dims}.values())
    rollups.SUMMARIES = ingest.SUMMARIES = kept  # type: ignore[assignment]
    rollups.DIMENSIONS = ingest.DIMENSIONS = dimensions
    ingest._pg_insert_sql_for.cache_clear()


def child_import(directory: str) -> dict:
    import django

    django.setup()
    without = os.environ.get("KMSDASH_BENCH_WITHOUT_SUMMARIES", "")
    if without:
        leave_out_summaries(set(without.split(",")))
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    rss_before = peak_rss_mib()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    cpu_started = time.process_time()
    call_command("import_cloudtrail", directory, stdout=open(os.devnull, "w"))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    from audits.models import Event

    events = Event.objects.count()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A partitioned table or index (KMSDASH_EVENT_PARTITIONS) counts as the sum of its partitions.
            def tree(size: str, oid: str) -> str:
                return f"coalesce((SELECT sum({size}(p.relid)) FROM pg_partition_tree({oid}) p), {size}({oid}))"

            cursor.execute(
                f"SELECT c.relname, {tree('pg_total_relation_size', 'c.oid')} FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
                "AND NOT c.relispartition AND c.relname LIKE 'audits\\_%%'"
            )
            tables = {name: int(total) for name, total in cursor.fetchall()}
            cursor.execute(
                f"SELECT c.relname, {tree('pg_relation_size', 'c.oid')} FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
                "WHERE t.relname = 'audits_event'"
            )
            parts = {name: int(size) for name, size in cursor.fetchall()}
            event_oid = "'audits_event'::regclass"
            cursor.execute(f"SELECT {tree('pg_relation_size', event_oid)}, {tree('pg_total_relation_size', event_oid)}")
            heap, total = (int(value) for value in cursor.fetchone())
            index_sum = sum(parts.values())
            parts["audits_event (heap)"] = heap
            parts["audits_event (toast)"] = total - heap - index_sum
            parts.update((name, size) for name, size in tables.items() if name != "audits_event")
            cursor.execute("SELECT coalesce(sum(pg_column_size(quota_class)), 0) FROM audits_event")
            quota_class_bytes = cursor.fetchone()[0]
        else:
            cursor.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
            sizes = dict(cursor.fetchall())
            # Tables and indexes of the audits app (index names come from audits/models.py).
            prefixes = ("audits_", "event_", "rollup_", "run_", "checkpoint_", "processed_", "sqlite_autoindex_audits")
            tables = {name: size for name, size in sizes.items() if name.startswith(prefixes)}
            parts = tables
            quota_class_bytes = 0
        raw_avg = tables.get("audits_rawblock", 0) / max(events, 1)
    return {
        "vendor": connection.vendor,
        # Wall-clock rates on a shared machine follow its load; CPU per event does not.
        "load": (load_before, os.getloadavg()[0]),
        "events": events,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": rss_before,
        "stored_bytes": sum(tables.values()),
        "raw_avg_bytes": raw_avg,
        "quota_class_bytes": quota_class_bytes,
        "without": without,
        "parts": {name: size for name, size in sorted(parts.items(), key=lambda kv: -kv[1])},
    }


def run_child(database_url: str, directory: Path, *, without: str = "") -> dict:
    env = dict(os.environ, DATABASE_URL=database_url, KMSDASH_LOG_LEVEL="WARNING")
    env["KMSDASH_BENCH_WITHOUT_SUMMARIES"] = without
    out = subprocess.run(
        [sys.executable, __file__, "--child-import", str(directory)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


QUOTA_TABLES = ("audits_quotaminute",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--per-file", type=int, default=1000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG))
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument(
        "--time-ordered",
        action="store_true",
        help="files in time order, as CloudTrail writes them (default: random times, the worst case)",
    )
    parser.add_argument("--days", type=int, default=30, help="days the events are spread over (fewer: denser)")
    parser.add_argument("--parse-only", action="store_true", help="only the parse baselines (no database)")
    parser.add_argument(
        "--compare-quota-summaries",
        action="store_true",
        help="import into PostgreSQL without, then with, the per-minute request-quota summaries",
    )
    parser.add_argument("--child-import", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_import:
        print(json.dumps(child_import(args.child_import)))
        return

    workdir = Path(tempfile.mkdtemp(prefix="kmsdash-bench-"))
    try:
        started = time.perf_counter()
        files = generate(workdir / "logs", args.events, args.per_file, args.time_ordered, args.days)
        gz_bytes = sum(p.stat().st_size for p in files)
        order = ("in time order" if args.time_ordered else "at random times") + f" over {args.days} days"
        print(
            f"generated {args.events} events {order} in {len(files)} files ({gz_bytes / args.events:.0f} B/event "
            f"gzipped) in {time.perf_counter() - started:.1f}s"
        )
        n, seconds, cpu = baseline_parse(files)
        parse_rate = n / seconds
        print(f"baseline  decompress+orjson.loads      {parse_rate:>9,.0f} events/s  cpu {cpu / n * 1e6:.0f} us/event")
        n, seconds, cpu = baseline_parse(files, json.loads)
        print(f"          decompress+json.loads        {n / seconds:>9,.0f} events/s  cpu {cpu / n * 1e6:.0f} us/event")
        n, seconds, cpu = baseline_ijson(files)
        print(
            f"          decompress+iter_file_records {n / seconds:>9,.0f} events/s  cpu {cpu / n * 1e6:.0f} us/event"
            f"  ({(n / seconds) / parse_rate:.2f}x orjson.loads)"
        )
        if args.parse_only:
            return
        recreate_pg_database(args.database_url)
        try:
            n, seconds, cpu = baseline_copy(files, args.database_url)
            copy_rate, copy_cpu = n / seconds, cpu / n
            print(
                f"baseline  parse+COPY to a bare table   {copy_rate:>9,.0f} events/s  cpu {copy_cpu * 1e6:.0f} us/event"
            )
            results = []
            if args.compare_quota_summaries:
                results.append(run_child(args.database_url, workdir / "logs", without=QUOTA_SUMMARIES))
                recreate_pg_database(args.database_url)
            results.append(run_child(args.database_url, workdir / "logs"))
        finally:
            recreate_pg_database(args.database_url, drop_only=True)
        if not args.no_sqlite:
            results.append(run_child(f"sqlite:///{workdir / 'bench.sqlite3'}", workdir / "logs"))
        for result in results:
            rate = result["events"] / result["seconds"]
            cpu = result["cpu_seconds"] / result["events"]
            variant = " (without the quota summaries)" if result["without"] else ""
            print(
                f"import    {result['vendor']:<10}{variant} {rate:>9,.0f} events/s  ratio {rate / copy_rate:.2f} "
                f"of baseline  cpu {cpu * 1e6:.0f} us/event (ratio {copy_cpu / cpu:.2f})  "
                f"peak RSS {result['peak_rss_mib']:.0f} MiB  stored {result['stored_bytes'] / result['events']:.0f} "
                f"B/event (raw {result['raw_avg_bytes']:.0f})  events {result['events']}"
            )
            top = ", ".join(f"{name} {size / result['events']:.0f}" for name, size in list(result["parts"].items())[:6])
            print(f"          largest parts, B/event: {top}")
            if result["vendor"] == "postgresql":
                quota = {name: result["parts"].get(name, 0) / result["events"] for name in QUOTA_TABLES}
                print(
                    "          quota summary, B/event: "
                    + ", ".join(f"{name} {size:.1f}" for name, size in quota.items())
                    + f"; audits_event.quota_class {result['quota_class_bytes'] / result['events']:.1f}"
                )
            print(f"          load average (1 min) {result['load'][0]:.2f} at start, {result['load'][1]:.2f} at end")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
