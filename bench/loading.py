"""Loading a large benchmark database through the real ingestion path, shared by the benches.

The database is created if missing and reused, topped up chunk by chunk, so an interrupted load
resumes and a second bench can run on what the first one loaded.
"""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

CHUNK = 250_000  # events per generator seed: the unit of loading and of resuming


def ensure_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def load_chunk(args: tuple[int, str]) -> int:
    """Ingest chunk `seed` (CHUNK events over the 90 days before `end`); runs in a worker process."""
    seed, end = args
    from django.db import connections

    from audits import synthetic
    from audits.ingest import finish_run, ingest_records, start_run
    from audits.models import IngestRun

    connections.close_all()  # never share the parent's connection
    start = datetime.fromisoformat(end) - timedelta(days=90)
    run = start_run(IngestRun.Kind.FILES)
    counts = ingest_records(synthetic.generate_records(CHUNK, seed=seed, start=start, days=90), run=run)
    finish_run(run, counts)
    return counts.events_new


def load(events: int, workers: int) -> None:
    from django.db import connection

    from audits.models import IngestRun

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audits_event")
        have = cursor.fetchone()[0]
    chunks = -(-events // CHUNK)
    done = have // CHUNK
    print(f"events present: {have:,}; target {chunks * CHUNK:,} ({chunks} chunks of {CHUNK:,})", flush=True)
    if done >= chunks:
        return
    # All chunks share one time span: the end of the first load, kept in the ledger.
    first = IngestRun.objects.order_by("id").values_list("started_at", flat=True).first()
    end = (first or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0).isoformat()
    started = time.perf_counter()
    loaded = 0
    connection.close()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        for new in pool.imap_unordered(load_chunk, [(seed, end) for seed in range(done, chunks)]):
            loaded += new
            rate = loaded / (time.perf_counter() - started)
            print(f"  +{new:,} events ({loaded:,} this run, {rate:,.0f}/s)", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"loaded {loaded:,} events in {time.perf_counter() - started:,.0f} s", flush=True)
