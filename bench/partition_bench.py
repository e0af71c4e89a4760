"""Retention at scale: today's row-by-row `purge_events` against dropping day partitions, in one run.

    python bench/partition_bench.py [--days 200000,200000,1000000] [--database-url postgres://...]

Builds two PostgreSQL databases holding the same events: `plain` migrated with
KMSDASH_EVENT_PARTITIONS=off (one table; raw blocks of 1,000 records as ingestion writes them, a
critical record among every 50), `parted` migrated with daily partitions (blocks per UTC day and
criticality, as ingestion writes them there, and the day partitions of 90 days back to 7 ahead,
like a deployment keeping 90 days). Each purged day gets the sizes given (an organisation making
10 million KMS calls a day keeps a share of that per account and region), 2% of them critical; a
last day of 50,000 events stays. Rows are made by INSERT ... SELECT over generate_series (the
ingestion path would take hours), every raw block a real zstd block of 1,000 synthetic records.

Then, day by day, oldest first, on each database: `audits.retention.purge_events` with the horizon
at the end of that day (a plain table: today's one-transaction-per-day DELETE and raw-block
rewrite; a partitioned one: DROP of the day's partitions), timed, each SQL statement of the
partitioned purge timed too. Asserts that both leave the same events (critical ones kept) and the
same rollups, and prints ms per day for both and the ratio. Load average before and after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kmsdash_partition_bench"
CRITICAL_EVERY = 50  # row i is critical when i % 50 == 7: 2%, as in the synthetic data
KEPT_DAY = 50_000

EVENT_SQL = """
INSERT INTO audits_event (recipient_account_id, event_id, event_time, event_name, region, key, principal,
    principal_type, session_name, service, caller_account_id, source_ip, user_agent, error_code, error_message,
    read_only, event_type, event_category, encryption_context, request_id, shared_event_id, vpc_endpoint_id,
    s3_bucket, after_hours, quota_class, own, critical, raw_block_id, raw_index)
SELECT '111122223333', md5(%(day)s || ':' || i)::uuid::text, %(start)s::timestamptz + (i * %(step)s) * interval '1 ms',
    CASE WHEN crit THEN (ARRAY['CreateGrant','RetireGrant','PutKeyPolicy','CreateKey'])[1 + i %% 4]
         ELSE (ARRAY['Decrypt','GenerateDataKey','Encrypt','Decrypt'])[1 + i %% 4] END,
    'us-east-1', 'arn:aws:kms:us-east-1:111122223333:key/' || md5('key' || (i %% 50)::text)::uuid::text,
    'arn:aws:sts::111122223333:assumed-role/app-' || (i %% 997) || '/session', 'AssumedRole', 'session',
    '', '111122223333', '10.0.' || (i %% 250) || '.' || (i %% 7), 'aws-sdk-java/2.20.0 Linux/5.10', '', '',
    true, 'AwsApiCall', 'Management', jsonb_build_object('aws:s3:arn', 'arn:aws:s3:::bucket-' || (i %% 20)),
    md5('r' || i), '', '', 'bucket-' || (i %% 20), false, 'symmetric', false, crit,
    CASE WHEN NOT %(separate)s THEN %(base)s + i / 1000
         WHEN crit THEN %(critical_base)s + ((i + 42) / 50) / 1000
         ELSE %(base)s + (i - (i + 42) / 50) / 1000 END,
    CASE WHEN NOT %(separate)s THEN i %% 1000
         WHEN crit THEN ((i + 42) / 50) %% 1000
         ELSE (i - (i + 42) / 50) %% 1000 END
FROM (SELECT i, i %% 50 = 7 AS crit FROM generate_series(0, %(n)s - 1) AS i) AS rows
"""


def admin(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def migrate(url: str, partitions: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "KMSDASH_EVENT_PARTITIONS": partitions, "KMSDASH_LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], env=env, check=True)


def load(url: str, plan: list[tuple[datetime, int]], block: bytes, *, separate: bool) -> None:
    """The events of each (day, count), their raw blocks, rollups and OperationDay summaries."""
    import psycopg

    with psycopg.connect(url) as conn:
        base = 1
        for day, n in plan:
            critical_n = (n + 42) // 50
            normal_blocks = -(-(n - (critical_n if separate else 0)) // 1000)
            critical_blocks = -(-critical_n // 1000) if separate else 0
            critical_base = base + normal_blocks
            step = 86_400_000 // n  # spread over the day, in time order
            conn.execute(
                EVENT_SQL,
                {
                    "day": day.date().isoformat(),
                    "start": day,
                    "step": step,
                    "n": n,
                    "separate": separate,
                    "base": base,
                    "critical_base": critical_base,
                },
            )
            last = day + timedelta(milliseconds=step * (n - 1))
            conn.execute(
                "INSERT INTO audits_rawblock (id, data, last_event_time, critical) "
                "SELECT b, %s, %s, %s FROM generate_series(%s::bigint, %s::bigint) AS b",
                [block, last, not separate, base, critical_base - 1],  # mixed blocks each hold a critical record
            )
            if critical_blocks:
                conn.execute(
                    "INSERT INTO audits_rawblock (id, data, last_event_time, critical) "
                    "SELECT b, %s, %s, true FROM generate_series(%s::bigint, %s::bigint) AS b",
                    [block, last, critical_base, critical_base + critical_blocks - 1],
                )
            base = critical_base + critical_blocks
        conn.execute("SELECT setval('audits_rawblock_id_seq', %s)", [base])
        conn.execute("SELECT setval(pg_get_serial_sequence('audits_event', 'id'), (SELECT max(id) FROM audits_event))")
        conn.execute(
            "INSERT INTO audits_dailyrollup (day, account_id, region, key, operation, principal, service, error_code, "
            "after_hours, own, count, first_seen, last_seen) SELECT (event_time AT TIME ZONE 'UTC')::date, "
            "recipient_account_id, region, key, event_name, principal, service, error_code, after_hours, own, count(*), "
            "min(event_time), max(event_time) FROM audits_event GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
        )
        conn.execute(
            "INSERT INTO audits_operationday (day, account_id, region, operation, error_code, after_hours, count, "
            "first_seen, last_seen) SELECT (event_time AT TIME ZONE 'UTC')::date, recipient_account_id, region, "
            "event_name, error_code, after_hours, count(*), min(event_time), max(event_time) FROM audits_event "
            "WHERE NOT own GROUP BY 1, 2, 3, 4, 5, 6"
        )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # as autovacuum leaves days long past


def vacuum(url: str) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("VACUUM audits_event, audits_rawblock")
        return time.perf_counter() - started


def fingerprint(url: str) -> tuple:
    import psycopg

    with psycopg.connect(url) as conn:
        events = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE critical), md5(string_agg(event_id, ',' ORDER BY event_id)) "
            "FROM audits_event"
        ).fetchone()
        rollups = conn.execute("SELECT sum(count), count(*) FROM audits_dailyrollup").fetchone()
        return events, rollups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", default="200000,200000,1000000", help="events of each purged day, oldest first")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG))
    parser.add_argument(
        "--keep-sources",
        action="store_true",
        help="keep the loaded databases (<url>_plain_src, _parted_src) and "
        "reuse them when they exist (same --days, same UTC day)",
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.days.split(",")]
    plain_url, parted_url = args.database_url + "_plain", args.database_url + "_parted"
    print(f"load average {open('/proc/loadavg').read().split()[:3]}")
    reuse = args.keep_sources and exists(plain_url + "_src") and exists(parted_url + "_src")
    if not reuse:
        for url in (plain_url + "_src", parted_url + "_src"):
            name = url.rsplit("/", 1)[1]
            admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        migrate(plain_url + "_src", "off")
        migrate(parted_url + "_src", "daily")

    os.environ["DATABASE_URL"] = plain_url
    os.environ.setdefault("KMSDASH_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from audits import rawcodec, synthetic

    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    today = now.date()
    first = today - timedelta(days=len(sizes) + 1)
    plan = [
        (datetime.combine(first + timedelta(days=n), datetime.min.time(), tzinfo=UTC), size)
        for n, size in enumerate(sizes)
    ]
    plan.append((datetime.combine(today - timedelta(days=1), datetime.min.time(), tzinfo=UTC), KEPT_DAY))
    records = synthetic.generate_records(1000, seed=1, start=now - timedelta(days=1), days=1)
    block = rawcodec.encode_block([rawcodec.dumps(record) for record in records])

    if not reuse:
        load_sources(plain_url + "_src", parted_url + "_src", first, today, plan, block)
    for url in (plain_url, parted_url):
        name, source = url.rsplit("/", 1)[1], url.rsplit("/", 1)[1] + "_src"
        admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    assert fingerprint(plain_url) == fingerprint(parted_url)
    run(plain_url, parted_url, plan, sizes)
    for url in (plain_url, parted_url) + (() if args.keep_sources else (plain_url + "_src", parted_url + "_src")):
        admin(url, f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def exists(url: str) -> bool:
    import psycopg

    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres") as conn:
        name = url.rsplit("/", 1)[1]
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def load_sources(plain_url, parted_url, first, today, plan, block) -> None:
    from django.db import connection, connections

    from audits import partitions

    # The parted database: 98 day partitions from the first day on, as many as a deployment keeping
    # 90 days has (each purge then drops one day, as the daily task does).
    connections["default"].settings_dict["NAME"] = parted_url.rsplit("/", 1)[1]
    connections["default"].close()
    with connection.cursor() as cursor:
        have = set(partitions.days(cursor))
        for n in range(98):
            day = first + timedelta(days=n)
            if day not in have:
                partitions._create_day(cursor, day)
    connections["default"].close()

    for url, separate in ((plain_url, False), (parted_url, True)):
        started = time.perf_counter()
        load(url, plan, block, separate=separate)
        label = "parted" if separate else "plain"
        print(f"loaded {sum(n for _, n in plan):,} events into {label} in {time.perf_counter() - started:.0f}s")
    connections["default"].close()


def run(plain_url, parted_url, plan, sizes) -> None:
    from django.db import connection, connections

    from audits import retention

    timings: dict[str, list[float]] = {"plain": [], "parted": []}
    freeing: dict[str, list[float]] = {"plain": [], "parted": []}
    statements: list[tuple[str, float]] = []

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append((" ".join(sql.split())[:90], time.perf_counter() - started))

    commit = connection._commit  # type: ignore[attr-defined]

    def timed_commit():
        started = time.perf_counter()
        try:
            return commit()
        finally:
            statements.append(("COMMIT", time.perf_counter() - started))

    connection._commit = timed_commit  # type: ignore[attr-defined]
    for label, url in (("plain", plain_url), ("parted", parted_url)):
        connections["default"].settings_dict["NAME"] = url.rsplit("/", 1)[1]
        connections["default"].close()
        for day, _ in plan[:-1]:
            horizon_now = day + timedelta(days=1) + timedelta(days=1, hours=12)  # horizon: end of `day`
            statements.clear()
            started = time.perf_counter()
            with connection.execute_wrapper(timed):
                result = retention.purge_events(days=1, now=horizon_now)
            seconds = time.perf_counter() - started
            timings[label].append(seconds)
            # The part that frees disk space: the parted purge's DROP of the detached tables (no lock
            # on the events); for the plain table the VACUUM that autovacuum would run after the
            # DELETEs, timed here right away.
            if label == "parted":
                freeing[label].append(sum(spent for sql, spent in statements if sql.startswith("DROP TABLE")))
            else:
                freeing[label].append(vacuum(url))
            expected = sizes[len(timings[label]) - 1] - (sizes[len(timings[label]) - 1] + 42) // 50
            assert result.events == expected, (label, result.events, expected)
            print(
                f"  {label:6} {day:%Y-%m-%d} {result.events:>9,} events  {seconds * 1000:9.1f} ms  "
                f"({result.raw_blocks:,} blocks deleted, {result.raw_blocks_rewritten:,} rewritten); "
                f"{'DROP' if label == 'parted' else 'then VACUUM'} {freeing[label][-1] * 1000:.1f} ms"
            )
            if label == "parted":
                for sql, spent in statements:
                    if spent >= 0.0005:
                        print(f"           {spent * 1000:7.1f} ms  {sql}")
        connections["default"].close()
    assert fingerprint(plain_url) == fingerprint(parted_url), "the two purges left different events or rollups"
    print("both left the same events (critical ones kept) and the same rollups")
    print("purge_events, ms per day: the purge (plain: its DELETE transaction; parted: the transaction that")
    print("detaches the day under the ingest lock), the whole call (parted: with the DROP of the detached")
    print("tables after the lock), and with the space freed (plain: + VACUUM of the two tables)")
    print(
        f"{'day size':>10} | {'purge: plain':>12} {'parted':>8} {'ratio':>6} | {'call: parted':>12} {'ratio':>6} | "
        f"{'freed: plain':>12} {'parted':>8} {'ratio':>6}"
    )
    for n, plain, parted, vacuumed, dropped in zip(
        sizes, timings["plain"], timings["parted"], freeing["plain"], freeing["parted"], strict=True
    ):
        locked = parted - dropped
        print(
            f"{n:>10,} | {plain * 1000:>12.1f} {locked * 1000:>8.1f} {plain / locked:>5.0f}x | "
            f"{parted * 1000:>12.1f} {plain / parted:>5.0f}x | {(plain + vacuumed) * 1000:>12.1f} "
            f"{parted * 1000:>8.1f} {(plain + vacuumed) / parted:>5.0f}x"
        )
    print(f"load average {open('/proc/loadavg').read().split()[:3]}")
    connections["default"].close()


if __name__ == "__main__":
    main()
