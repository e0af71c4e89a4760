"""Storage floor of a narrow event store, measured against the current schema in the same run.

    python bench/storage_floor.py [--events N] [--time-ordered] [--database-url postgres://...]

Issue #2's target is at most 400 stored bytes per event; the product stores ~800. The README
estimated that a redesign with every repeated text as an integer id in a dimension table, and the
detail-only fields read from the raw record instead of columns, would store 383-445 B. This builds
that schema with plain SQL (tables `narrow_*`) in a scratch database (default
kmsdash_storage_floor; the current schema goes to kmsdash_storage_floor_current through
`import_cloudtrail`, as bench/ingest_bench.py does), loads the same synthetic events into both,
and prints the bytes per event of every table and index (pg_relation_size and
pg_total_relation_size after a plain ANALYZE). A design measurement, not product code: both
databases are dropped at the end.

The narrow schema:
  narrow_event      per event: the time; int ids of key, principal, service, user agent, source
                    IP; smallint ids of account, region, operation, error code; the after-hours
                    and read-only flags; the raw slot; and as primary key the dedupe key itself
                    (the product's UniqueKey of recipient account and event id, 16 bytes of a
                    SHA-256, computed in Python), replacing both the bigint key and the unique
                    index. Event id, request id, encryption context, session name, principal
                    type, caller account, event type and category, shared event id, VPC endpoint,
                    error message and S3 bucket are read from the raw record. Indexes: (event_time,
                    id), (key_id, event_time), (principal_id, event_time).
  narrow_rawblock   rawcodec blocks of the same 1,000 records: byte for byte the product's.
  narrow_rollup     the nine dimensions as ints, unique on a 16-byte hash of them (as the product);
                    (key_id, day), (day), (principal_id, day).
  narrow_*day       KeyDay, OperationDay, PrincipalDay, KeyPrincipalDay, KeyServiceDay and BucketDay
                    with int dimensions. Rollups and summaries at fillfactor 70, as the product.
  narrow_<dim>      one table per dimension: (id, text UNIQUE).
Two alternatives are loaded beside the indexes they would replace and printed, not counted
(ALTERNATIVES): the explorer's tie-break on the raw slot instead of the uuid, and the rollup's
unique index on its int columns instead of the hash.

It is loaded as a real importer would: batches of 10,000 events (new dimension texts upserted
first), COPY into a temporary stage, one INSERT ... ON CONFLICT (id) DO NOTHING RETURNING feeding
the rollup and summary upserts (count = count + excluded.count), the raw blocks of the inserted
rows in the same transaction, one batch written by a thread while the next is parsed (the
product's pipeline). So the dead tuples and page splits of a real load are in the figures; a bulk
load followed by CREATE INDEX would under-measure. Both loads gave the same rollup and summary
counts and byte-identical raw blocks (checked at 30,000 events). Their events/s are an indication
only.

Output (the current schema's smaller parts cut here), and the latest figures: 2 cores shared with
the PostgreSQL server and with other jobs (CPU per event was ~2.5x that of the README's runs, so
both rates are low; compare them with each other only).

    $ python bench/storage_floor.py --events 500000                 (2026-11-29)
    generated 500000 events at random times in 500 files in 102.0s
    narrow   500,000 events  6,179 events/s  cpu 114 us/event  stored 389.9 B/event
        266.2  narrow_event (heap 93.1, toast and maps 0.1)
           51.5    narrow_event_time_id
           41.1    narrow_event_principal_time
           40.9    narrow_event_key_time
           39.8    narrow_event_time_slot  (instead of narrow_event_time_id: not in the total)
           39.5    narrow_event_pkey
         85.2  narrow_rawblock (heap 0.1, toast and maps 85.0)
            0.1    narrow_rawblock_pkey
         29.0  narrow_rollup (heap 18.9, toast and maps 0.0)
            9.9    narrow_rollup_unique_ints  (instead of narrow_rollup_unique_hash: not in the total)
            6.1    narrow_rollup_unique_hash
            1.4    narrow_rollup_principal_day
            1.3    narrow_rollup_day
            1.2    narrow_rollup_key_day
          3.0  narrow_operationday (heap 2.1, toast and maps 0.0)
            0.9    narrow_operationday_unique
          2.0  narrow_keyprincipalday (heap 1.4, toast and maps 0.0)
            0.5    narrow_keyprincipalday_unique
          1.3  narrow_keyserviceday (heap 0.9, toast and maps 0.0)
            0.4    narrow_keyserviceday_unique
          0.8  narrow_keyday (heap 0.5, toast and maps 0.0)
            0.1    narrow_keyday_key_day
            0.1    narrow_keyday_unique
          0.7  narrow_bucketday (heap 0.5, toast and maps 0.0)
            0.2    narrow_bucketday_unique
          0.7  narrow_principalday (heap 0.5, toast and maps 0.0)
            0.2    narrow_principalday_unique
          1.0  10 tables under 0.5 B/event each (narrow_source_ip, narrow_key, narrow_principal, ...)
    current  500,000 events  5,815 events/s  cpu 103 us/event  stored 814.2 B/event
        636.9  audits_event (heap 454.2, toast and maps 0.2)
           40.6    event_key_time
           40.2    event_principal_time
           39.8    event_time_id
           39.5    event_unique_per_account
           22.5    audits_event_pkey
         85.2  audits_rawblock (heap 0.1, toast and maps 85.0)
         67.9  audits_dailyrollup (heap 54.0, toast and maps 0.1)
        ...    (the six summaries 24.0 in all)
    narrow 389.9 B/event against current 814.2 (0.48x)
      narrow_event_time_slot instead of narrow_event_time_id: -11.7 B/event, narrow 378.2
      narrow_rollup_unique_ints instead of narrow_rollup_unique_hash: +3.7 B/event, narrow 393.6
      with the smaller index of each pair: narrow 378.2 B/event
    $ python bench/storage_floor.py --events 500000 --time-ordered     (condensed)
    narrow   500,000 events  8,110 events/s  cpu 112 us/event  stored 360.6 B/event
        237.3  narrow_event: heap 93.1; time_id 40.5, pkey 39.8, principal_time 31.9, key_time 31.9
         83.1  narrow_rawblock; 29.9 narrow_rollup (unique hash 6.2, ints 10.6); summaries 9.2
    current  500,000 events  8,044 events/s  cpu 109 us/event  stored 793.8 B/event
    narrow 360.6 B/event against current 793.8 (0.45x); with the slot tie-break 351.6
    $ python bench/storage_floor.py --events 100000 --time-ordered     (last line)
    narrow 417.0 B/event against current 913.2 (0.46x); with the slot tie-break 407.9

Where the bytes go (500k): the row is 93 B (a 24-byte header, 60 of data, a 4-byte line pointer;
4 bytes of the 88-byte tuple are alignment padding, room for one more int id at no cost); the four
indexes 173 at random times, 144 in time order; the raw records 83-85; the rollup 29-30 and the
summaries ~9 (their rows per event fall as N grows over the same 30 days: at 100k the rollup takes
56, hence 417); the dimension tables 1. So the redesign measures 361-390 B/event at 500k, under the
estimate and under 400 by 10 B at random times. The uuid costs the time index ~9-12 B/event over a
tie-break on the raw slot (event_time, raw_block_id, raw_index), unique too; the rollup's hash
index is smaller than one on its int columns.

What the measurement leaves out, and what the pages would need:
  * The synthetic data has 24 keys, 18 principals, 4 user agents and 254 source IPs: dimension
    tables cost 1 B/event here. Real agents and addresses vary far more; each new text costs, once,
    its row and two index entries: ~150-250 B for a 30-60 character text.
  * The events list shows principal type, session name and error message (selectors.LIST_FIELDS),
    which would come from raw blocks: up to one block (~1 ms to decompress) per row shown, or
    keep them as ids (the padding holds an int for free). The key page's context sample (encryption
    contexts and buckets of the 5,000 newest events) would decompress up to one block per event
    sampled, hundreds for a key with a small share of the traffic: it would need a summary of its
    own. The CSV export's detail columns come from the blocks too.
  * Cursors and the raw-record URL name the event by its uuid (or raw slot), not an integer id;
    `q` and bare key-id filters match dimension texts first, then filter events by their ids.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")

from audits import rawcodec  # noqa: E402
from audits.cloudtrail import BusinessHours, parse_record, s3_context_names_object  # noqa: E402
from bench.ingest_bench import generate, recreate_pg_database, run_child  # noqa: E402

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kmsdash_storage_floor"
BATCH = 10_000  # the product's KMSDASH_INGEST_BATCH_SIZE

# (table, id type, text column, NormalizedEvent field). The bucket only feeds narrow_bucketday.
DIMENSIONS = (
    ("narrow_key", "int", "arn", "key"),
    ("narrow_principal", "int", "arn", "principal"),
    ("narrow_account", "smallint", "value", "recipient_account_id"),
    ("narrow_region", "smallint", "value", "region"),
    ("narrow_operation", "smallint", "value", "event_name"),
    ("narrow_error_code", "smallint", "value", "error_code"),
    ("narrow_service", "int", "value", "service"),
    ("narrow_user_agent", "int", "value", "user_agent"),
    ("narrow_source_ip", "int", "value", "source_ip"),
    ("narrow_bucket", "int", "value", "s3_bucket"),
)

# Widest alignment first: 8-byte time, 4-byte ids, 2-byte ids, then the uuid and the flags, which
# need no alignment. 60 bytes of data, an 88-byte tuple with its header.
EVENT_COLUMNS = (
    ("event_time", "timestamptz"),
    ("key_id", "int4"),
    ("principal_id", "int4"),
    ("service", "int4"),
    ("user_agent", "int4"),
    ("source_ip", "int4"),
    ("raw_block_id", "int4"),
    ("account", "int2"),
    ("region", "int2"),
    ("event_name", "int2"),
    ("error_code", "int2"),
    ("raw_index", "int2"),
    ("id", "uuid"),
    ("after_hours", "bool"),
    ("read_only", "bool"),
)
# Staged beside the event's columns for the summaries only: what they count is decided in Python.
STAGE_COLUMNS = EVENT_COLUMNS + (
    ("s3_bucket", "int4"),
    ("s3_object", "bool"),
    ("encrypt", "bool"),
    ("decrypt", "bool"),
    ("generate", "bool"),
    ("failed", "bool"),
)

ROLLUP_DIMS = (
    "day",
    "account",
    "region",
    "key_id",
    "event_name",
    "principal_id",
    "service",
    "error_code",
    "after_hours",
)
# The product's UniqueKey over ints: their text holds no backslash and a comma cannot occur in it,
# so neither escaping nor length prefixes are needed. Every cast is IMMUTABLE (`int || text` is not).
ROLLUP_HASH = "(encode(substring(sha256(decode({}, 'escape')) FROM 1 FOR 16), 'hex')::uuid)".format(
    " || ',' || ".join(
        "(day - DATE '1970-01-01')::text" if dim == "day" else f"{dim}::int::text" for dim in ROLLUP_DIMS
    )
)

SCHEMA = f"""
CREATE TABLE narrow_event (
    event_time timestamptz NOT NULL,
    key_id int NOT NULL,
    principal_id int NOT NULL,
    service int NOT NULL,
    user_agent int NOT NULL,
    source_ip int NOT NULL,
    raw_block_id int NOT NULL,
    account smallint NOT NULL,
    region smallint NOT NULL,
    event_name smallint NOT NULL,
    error_code smallint NOT NULL,
    raw_index smallint NOT NULL,
    id uuid PRIMARY KEY,
    after_hours bool NOT NULL,
    read_only bool
);
CREATE INDEX narrow_event_time_id ON narrow_event (event_time, id);
CREATE INDEX narrow_event_time_slot ON narrow_event (event_time, raw_block_id, raw_index);
CREATE INDEX narrow_event_key_time ON narrow_event (key_id, event_time);
CREATE INDEX narrow_event_principal_time ON narrow_event (principal_id, event_time);

CREATE TABLE narrow_rawblock (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, data bytea NOT NULL);

CREATE TABLE narrow_rollup (
    count bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    day date NOT NULL,
    key_id int NOT NULL,
    principal_id int NOT NULL,
    service int NOT NULL,
    account smallint NOT NULL,
    region smallint NOT NULL,
    event_name smallint NOT NULL,
    error_code smallint NOT NULL,
    after_hours bool NOT NULL
) WITH (fillfactor = 70);
CREATE UNIQUE INDEX narrow_rollup_unique_hash ON narrow_rollup ({ROLLUP_HASH});
CREATE UNIQUE INDEX narrow_rollup_unique_ints ON narrow_rollup ({", ".join(ROLLUP_DIMS)});
CREATE INDEX narrow_rollup_key_day ON narrow_rollup (key_id, day);
CREATE INDEX narrow_rollup_day ON narrow_rollup (day);
CREATE INDEX narrow_rollup_principal_day ON narrow_rollup (principal_id, day);

CREATE TABLE narrow_keyday (
    calls bigint NOT NULL,
    encrypt bigint NOT NULL,
    decrypt bigint NOT NULL,
    generate bigint NOT NULL,
    failed bigint NOT NULL,
    after_hours_calls bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    day date NOT NULL,
    key_id int NOT NULL,
    account smallint NOT NULL,
    region smallint NOT NULL,
    CONSTRAINT narrow_keyday_unique UNIQUE (day, account, region, key_id)
) WITH (fillfactor = 70);
CREATE INDEX narrow_keyday_key_day ON narrow_keyday (key_id, day);

CREATE TABLE narrow_operationday (
    count bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    day date NOT NULL,
    account smallint NOT NULL,
    region smallint NOT NULL,
    event_name smallint NOT NULL,
    error_code smallint NOT NULL,
    after_hours bool NOT NULL,
    CONSTRAINT narrow_operationday_unique UNIQUE (day, account, region, event_name, error_code, after_hours)
) WITH (fillfactor = 70);

CREATE TABLE narrow_principalday (
    count bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    day date NOT NULL,
    principal_id int NOT NULL,
    account smallint NOT NULL,
    region smallint NOT NULL,
    CONSTRAINT narrow_principalday_unique UNIQUE (day, account, region, principal_id)
) WITH (fillfactor = 70);

CREATE TABLE narrow_keyprincipalday (
    count bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    day date NOT NULL,
    key_id int NOT NULL,
    principal_id int NOT NULL,
    account smallint NOT NULL,
    region smallint NOT NULL,
    CONSTRAINT narrow_keyprincipalday_unique UNIQUE (key_id, day, account, region, principal_id)
) WITH (fillfactor = 70);

CREATE TABLE narrow_keyserviceday (
    count bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    day date NOT NULL,
    key_id int NOT NULL,
    service int NOT NULL,
    account smallint NOT NULL,
    region smallint NOT NULL,
    CONSTRAINT narrow_keyserviceday_unique UNIQUE (key_id, day, account, region, service)
) WITH (fillfactor = 70);

CREATE TABLE narrow_bucketday (
    count bigint NOT NULL,
    object_calls bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    day date NOT NULL,
    key_id int NOT NULL,
    s3_bucket int NOT NULL,
    account smallint NOT NULL,
    region smallint NOT NULL,
    CONSTRAINT narrow_bucketday_unique UNIQUE (day, account, region, key_id, s3_bucket)
) WITH (fillfactor = 70);
""" + "".join(
    f"CREATE TABLE {table} (id {kind} GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, {column} text NOT NULL UNIQUE);\n"
    for table, kind, column, _ in DIMENSIONS
)

_ALL = (("count", None),)
# Built and loaded beside the index they could replace, each printed but left out of the total:
# (event_time, raw slot) is as unique a tie-break for the explorer's keyset pages as the uuid, in
# 8 bytes less; a unique index on the rollup's int columns needs no hash.
ALTERNATIVES = {
    "narrow_event_time_slot": "narrow_event_time_id",
    "narrow_rollup_unique_ints": "narrow_rollup_unique_hash",
}

# (table, dimensions, counts as (column, condition or None for all), conflict target, where).
SUMMARIES = (
    ("narrow_rollup", ROLLUP_DIMS, _ALL, ROLLUP_HASH, None),
    (
        "narrow_keyday",
        ("day", "account", "region", "key_id"),
        (
            ("calls", None),
            ("encrypt", "encrypt"),
            ("decrypt", "decrypt"),
            ("generate", "generate"),
            ("failed", "failed"),
            ("after_hours_calls", "after_hours"),
        ),
        None,
        None,
    ),
    ("narrow_operationday", ("day", "account", "region", "event_name", "error_code", "after_hours"), _ALL, None, None),
    ("narrow_principalday", ("day", "account", "region", "principal_id"), _ALL, None, None),
    ("narrow_keyprincipalday", ("key_id", "day", "account", "region", "principal_id"), _ALL, None, None),
    ("narrow_keyserviceday", ("key_id", "day", "account", "region", "service"), _ALL, None, None),
    (
        "narrow_bucketday",
        ("day", "account", "region", "key_id", "s3_bucket"),
        (("count", None), ("object_calls", "s3_object")),
        None,
        "s3_bucket IS NOT NULL",
    ),
)


def insert_sql() -> str:
    """One statement per batch, as audits.ingest: the new events, then the upserts of their counts."""
    columns = ", ".join(name for name, _ in EVENT_COLUMNS)
    upserts = []
    for n, (table, dims, counts, target, where) in enumerate(SUMMARIES):
        dim_list = ", ".join(dims)
        count_list = ", ".join(column for column, _ in counts)
        values = ", ".join(
            f"count(*) FILTER (WHERE {condition})" if condition else "count(*)" for _, condition in counts
        )
        added = ", ".join(f"{column} = {table}.{column} + EXCLUDED.{column}" for column, _ in counts)
        upserts.append(f"""
        summary{n} AS (
            INSERT INTO {table} ({dim_list}, {count_list}, first_seen, last_seen)
            SELECT {dim_list}, {values}, min(event_time), max(event_time) FROM new {f"WHERE {where}" if where else ""}
            GROUP BY {dim_list} ORDER BY {dim_list}
            ON CONFLICT ({target or dim_list}) DO UPDATE SET {added},
                first_seen = LEAST({table}.first_seen, EXCLUDED.first_seen),
                last_seen = GREATEST({table}.last_seen, EXCLUDED.last_seen)
            RETURNING 1
        )""")
    counted = ", ".join(f"(SELECT count(*) FROM summary{n})" for n in range(len(SUMMARIES)))
    return f"""
        WITH inserted AS (
            INSERT INTO narrow_event ({columns})
            SELECT {columns} FROM narrow_stage ORDER BY event_time, id
            ON CONFLICT (id) DO NOTHING
            RETURNING id
        ),
        new AS (
            SELECT stage.*, (stage.event_time AT TIME ZONE 'UTC')::date AS day
            FROM narrow_stage AS stage JOIN inserted USING (id)
        ),{",".join(upserts)}
        SELECT array_agg(raw_block_id), array_agg(raw_index), {counted} FROM new
    """


def dedupe_key(account: str, event_id: str) -> uuid.UUID:
    """audits.fields.UniqueKey of (recipient account, event id), computed in Python."""
    text = f"{len(account)}:{account}{len(event_id)}:{event_id}"
    return uuid.UUID(bytes=hashlib.sha256(text.encode()).digest()[:16])


def _write_order(row) -> tuple:
    # audits.ingest's order: rows, raw blocks and index entries in time order, as the product's.
    event = row[0]
    return event.event_time, event.recipient_account_id, event.event_id


class NarrowWriter:
    """Writes batches of (NormalizedEvent, raw JSON text) into the narrow schema over one connection."""

    def __init__(self, conn):
        self.conn = conn
        self.ids: dict[str, dict[str, int]] = {table: {} for table, *_ in DIMENSIONS}
        self.compressor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="narrow-zstd")
        self.sql = insert_sql()
        conn.execute(
            f"CREATE TEMPORARY TABLE narrow_stage ({', '.join(f'{name} {kind}' for name, kind in STAGE_COLUMNS)}) "
            "ON COMMIT DELETE ROWS"
        )
        conn.commit()

    def close(self) -> None:
        self.compressor.shutdown()

    def _resolve_dimensions(self, events) -> None:
        # Committed before the batch, so that a batch rolled back cannot take back an id in the cache.
        for table, _, column, field in DIMENSIONS:
            known = self.ids[table]
            values = {getattr(event, field) for event in events} - known.keys()
            if table == "narrow_bucket":
                values.discard("")  # no bucket: NULL, and the event is not in narrow_bucketday
            missing = sorted(values)
            if missing:
                self.conn.execute(
                    f"INSERT INTO {table} ({column}) SELECT unnest(%s::text[]) ON CONFLICT ({column}) DO NOTHING",
                    [missing],
                )
                known.update(self.conn.execute(f"SELECT {column}, id FROM {table} WHERE {column} = ANY(%s)", [missing]))
        self.conn.commit()

    def write(self, rows) -> int:
        """Returns how many events were new, as audits.ingest.write_events."""
        per_block = rawcodec.BLOCK_RECORDS
        unique: dict[tuple[str, str], tuple[Any, bytes]] = {}
        for event, text in sorted(rows, key=_write_order):
            unique.setdefault((event.recipient_account_id, event.event_id), (event, text))
        rows = list(unique.values())
        events = [event for event, _ in rows]
        self._resolve_dimensions(events)
        texts = [text for _, text in rows]
        compressed = [
            self.compressor.submit(rawcodec.encode_block, texts[first : first + per_block])
            for first in range(0, len(rows), per_block)
        ]
        key, principal, account, region, operation, error, service, agent, address, bucket = (
            self.ids[table] for table, *_ in DIMENSIONS
        )
        with self.conn.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence('narrow_rawblock', 'id')) FROM generate_series(1, %s)",
                [len(compressed)],
            )
            blocks = [block for (block,) in cursor.fetchall()]
            names = ", ".join(name for name, _ in STAGE_COLUMNS)
            with cursor.copy(f"COPY narrow_stage ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types([kind for _, kind in STAGE_COLUMNS])
                for n, e in enumerate(events):
                    copy.write_row(
                        (
                            e.event_time,
                            key[e.key],
                            principal[e.principal],
                            service[e.service],
                            agent[e.user_agent],
                            address[e.source_ip],
                            blocks[n // per_block],
                            account[e.recipient_account_id],
                            region[e.region],
                            operation[e.event_name],
                            error[e.error_code],
                            n % per_block,
                            dedupe_key(e.recipient_account_id, e.event_id),
                            e.after_hours,
                            e.read_only,
                            bucket.get(e.s3_bucket),
                            bool(e.s3_bucket) and s3_context_names_object(e.encryption_context),
                            e.event_name == "Encrypt",
                            e.event_name == "Decrypt",
                            e.event_name.startswith("GenerateDataKey"),
                            bool(e.error_code),
                        )
                    )
            # Without statistics the planner takes the stage's join with the inserted rows for 60 times
            # its size, and compiles the statement (JIT): 2.6 s of a 3 s batch.
            cursor.execute("ANALYZE narrow_stage")
            cursor.execute(self.sql)
            new_blocks, new_indexes = cursor.fetchone()[:2]
            inserted = set(zip(new_blocks or (), new_indexes or (), strict=True))
            # Only the records of the events inserted are kept, as audits.ingest._fill_blocks.
            with cursor.copy("COPY narrow_rawblock (id, data) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "bytea"])
                for n, block in enumerate(blocks):
                    first = n * per_block
                    kept = [
                        text if (block, index) in inserted else b""
                        for index, text in enumerate(texts[first : first + per_block])
                    ]
                    if all(kept):
                        copy.write_row((block, compressed[n].result()))
                    elif any(kept):
                        copy.write_row((block, rawcodec.encode_block(kept)))
        self.conn.commit()
        return len(inserted)


def load_narrow(url: str, files: list[Path]) -> dict:
    """Parse the files as import_cloudtrail does and write them into the narrow schema."""
    import django
    import psycopg

    django.setup()
    from audits.ingest import bulk_gc
    from audits.sources.files import iter_file_records

    hours = BusinessHours.from_settings()
    with psycopg.connect(url) as conn, psycopg.connect(url) as writer_conn:
        conn.execute(SCHEMA)
        conn.commit()
        writer = NarrowWriter(writer_conn)
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="narrow-writer")
        inserted, in_flight, batch = 0, None, []
        started, cpu = time.perf_counter(), time.process_time()
        try:
            with bulk_gc():
                for path in files:
                    with path.open("rb") as stream:
                        for record in iter_file_records(stream, name=str(path)):
                            assert isinstance(record, dict)  # S3 log files hold objects
                            text = rawcodec.dumps(record)
                            batch.append((parse_record(record, hours, json_text=text), text))
                            if len(batch) >= BATCH:
                                # As the product's background writes: one batch written while the next is parsed.
                                if in_flight is not None:
                                    inserted += in_flight.result()
                                in_flight, batch = thread.submit(writer.write, batch), []
                if in_flight is not None:
                    inserted += in_flight.result()
                if batch:
                    inserted += writer.write(batch)
        finally:
            thread.shutdown()
            writer.close()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"events": inserted, "seconds": elapsed, "cpu_seconds": cpu}


def relation_sizes(url: str, pattern: str) -> list[tuple[str, int, int, list[tuple[str, int]]]]:
    """(table, total bytes, heap bytes, [(index, bytes)]) of the public tables named LIKE `pattern`.

    The total is pg_total_relation_size: heap, TOAST, free space and visibility maps and indexes.
    """
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
        tables = conn.execute(
            "SELECT c.oid, c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE %s",
            [pattern],
        ).fetchall()
        result = []
        for oid, name, total, heap in tables:
            indexes = conn.execute(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = %s ORDER BY 2 DESC, 1",
                [oid],
            ).fetchall()
            result.append((name, total, heap, indexes))
    return sorted(result, key=lambda table: -table[1])


def index_sizes(sizes) -> dict[str, int]:
    return {name: size for *_, indexes in sizes for name, size in indexes}


def report(title: str, load: dict, sizes) -> float:
    """Print one schema's figures; returns its stored bytes per event, without the ALTERNATIVES."""
    events = load["events"]
    per = 1 / max(events, 1)
    tables = [
        (
            name,
            total - sum(size for index, size in indexes if index in ALTERNATIVES),
            heap,
            total - heap - sum(size for _, size in indexes),
            indexes,
        )
        for name, total, heap, indexes in sizes
    ]
    stored = sum(total for _, total, *_ in tables) * per
    print(
        f"{title:<8} {events:,} events  {events / load['seconds']:,.0f} events/s  "
        f"cpu {load['cpu_seconds'] * per * 1e6:.0f} us/event  stored {stored:.1f} B/event"
    )
    small = [(name, total) for name, total, *_ in tables if total * per < 0.5]
    for name, total, heap, rest, indexes in tables:
        if total * per < 0.5:
            continue
        print(f"  {total * per:7.1f}  {name} (heap {heap * per:.1f}, toast and maps {rest * per:.1f})")
        for index, size in indexes:
            note = f"  (instead of {ALTERNATIVES[index]}: not in the total)" if index in ALTERNATIVES else ""
            print(f"  {size * per:9.1f}    {index}{note}")
    if small:
        print(
            f"  {sum(total for _, total in small) * per:7.1f}  {len(small)} tables under 0.5 B/event each "
            f"({', '.join(name for name, _ in small)})"
        )
    return stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument(
        "--time-ordered",
        action="store_true",
        help="files in time order, as CloudTrail writes them (default: random times, the worst case)",
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG))
    args = parser.parse_args()
    narrow_url = args.database_url
    current_url = f"{narrow_url}_current"

    workdir = Path(tempfile.mkdtemp(prefix="kmsdash-storage-floor-"))
    try:
        started = time.perf_counter()
        files = generate(workdir / "logs", args.events, 1000, args.time_ordered)
        order = "in time order" if args.time_ordered else "at random times"
        print(f"generated {args.events} events {order} in {len(files)} files in {time.perf_counter() - started:.1f}s")
        recreate_pg_database(current_url)
        current = run_child(current_url, workdir / "logs")
        current_sizes = relation_sizes(current_url, "audits\\_%")
        recreate_pg_database(current_url, drop_only=True)
        recreate_pg_database(narrow_url)
        narrow = load_narrow(narrow_url, files)
        narrow_sizes = relation_sizes(narrow_url, "narrow\\_%")
        floor = report("narrow", narrow, narrow_sizes)
        today = report("current", current, current_sizes)
        print(f"narrow {floor:.1f} B/event against current {today:.1f} ({floor / today:.2f}x)")
        indexes = index_sizes(narrow_sizes)
        for alternative, specified in ALTERNATIVES.items():
            change = (indexes[alternative] - indexes[specified]) / narrow["events"]
            print(f"  {alternative} instead of {specified}: {change:+.1f} B/event, narrow {floor + change:.1f}")
        pairs = ALTERNATIVES.items()
        saved = sum(min(indexes[alternative] - indexes[specified], 0) for alternative, specified in pairs)
        print(f"  with the smaller index of each pair: narrow {floor + saved / narrow['events']:.1f} B/event")
    finally:
        recreate_pg_database(narrow_url, drop_only=True)
        recreate_pg_database(current_url, drop_only=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
