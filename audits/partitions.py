"""Events and their raw blocks partitioned by UTC day on PostgreSQL, so retention drops whole days.

KMSDASH_EVENT_PARTITIONS=daily (the default; "off" keeps one table each, and SQLite is never
partitioned). Plain declarative partitioning, two levels:

    audits_event                  PARTITION BY LIST (critical)
      audits_event_kept           FOR VALUES IN (true): critical events, never dropped
      audits_event_recent         FOR VALUES IN (false), PARTITION BY RANGE (event_time)
        audits_event_p20261204    one UTC day
        audits_event_default      DEFAULT: an event of a day that has no partition (yet)
    audits_rawblock               the same on (critical, last_event_time)

Critical key-management events are kept apart from the moment they are written, so a purge moves
no row and rewrites no block: under the ingest lock it detaches the day partitions before the
horizon (events and blocks) and deletes row by row only what sits in the two default partitions
before the horizon (normally nothing); once that has committed, it drops the detached tables, which
takes no lock on the events, only the time the filesystem needs to free their files. Ingestion writes a block per (UTC day, critical) of its batch, so a
block lives in the partition of the day of its records, and a critical record never shares a block
with a record that goes.

Why not pg_partman or django-postgres-extra: neither can keep some rows of a partition it drops
(partman's retention drops or detaches whole tables; psqlextra's manager deletes whole partitions),
so the critical events would have to be moved out first, a cost per day that an earlier attempt
measured at about 95 ms/day, more than the row-by-row purge; partman also needs a superuser for
CREATE EXTENSION, and psqlextra wants its own model base class and migration operations, and cannot
convert an existing table. The DDL here is a dozen statements.

Deduplication: a unique index on a partitioned table must hold the partition keys, so it is on
(the hash of account and event id, event_time, critical). An event's time and name never change:
the same event read again (LookupEvents, S3, a re-run) has the same three, and meets its first copy.

Partitions are created ahead by a beat task (`ensure`); rows that arrived in a default partition
for a day are moved into that day's partition when it is created.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, models, transaction
from django.utils import timezone

AHEAD_DAYS = 7  # partitions made ahead of today; the task runs every 6 hours
EVENTS = ("audits_event", "event_time")
BLOCKS = ("audits_rawblock", "last_event_time")
TABLES = (EVENTS, BLOCKS)


def _execute(cursor, sql: str, params=None):
    cursor.execute(sql, params)
    return cursor


def is_partitioned() -> bool:
    """Whether audits_event is a partitioned table here (the catalogue says, not the setting)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.relname = %s AND c.relnamespace = current_schema()::regnamespace)",
            [EVENTS[0]],
        )
        return bool(cursor.fetchone()[0])


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _literal(moment: datetime) -> str:
    return f"'{moment.isoformat()}'::timestamptz"  # our own datetimes: DDL takes no parameters


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def days(cursor, table: str = EVENTS[0]) -> list[date]:
    """The UTC days that have a partition of `table`, oldest first."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass AND c.relname LIKE %s",
        [f"{table}_recent", f"{table}_p%"],
    )
    return sorted(date.fromisoformat(name[len(table) + 2 :]) for (name,) in cursor.fetchall())


def _create_day(cursor, day: date) -> None:
    """Both tables' partitions of `day`, with the rows of that day the default partitions took."""
    lower, upper = _literal(_midnight(day)), _literal(_midnight(day + timedelta(days=1)))
    for table, column in TABLES:
        name = partition_name(table, day)
        cursor.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)")
        cursor.execute(
            f"WITH moved AS (DELETE FROM {table}_default WHERE {column} >= {lower} AND {column} < {upper} "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        )
        # Builds the parent's indexes on the new table; checks the default holds nothing of the day.
        cursor.execute(f"ALTER TABLE {table}_recent ATTACH PARTITION {name} FOR VALUES FROM ({lower}) TO ({upper})")


def ensure(*, now: datetime | None = None, ahead: int = AHEAD_DAYS) -> list[date]:
    """Create the partitions from yesterday to `ahead` days on that are missing; returns their days.

    Never one before the retention purge's horizon: those days hold only critical events, which
    live in their own partition. Takes the ingest lock exclusively for its short transaction, so no
    batch writes into a default partition while its rows for the new day are moved out."""
    from . import retention

    if not is_partitioned():
        return []
    today = (now or timezone.now()).astimezone(UTC).date()
    wanted = [today + timedelta(days=n) for n in range(-1, ahead + 1)]
    purged = retention.purged_before()
    if purged is not None:
        wanted = [day for day in wanted if _midnight(day) >= purged]
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        retention._lock(shared=False)
        have = set(days(cursor))
        for day in wanted:
            if day not in have:
                _create_day(cursor, day)
                created.append(day)
    return created


def due(cursor, horizon: datetime) -> list[date]:
    """The days whose partitions lie wholly before `horizon`."""
    return [day for day in days(cursor) if _midnight(day + timedelta(days=1)) <= horizon]


def _day_events(cursor, dropped: list[date]) -> int:
    """The events of the partitions of `dropped` days, from the summaries written with them (they
    always equal a GROUP BY over the events, audits/ingest.py): OperationDay counts every event but
    kmsdash's own calls, which the rollup keeps apart (rollup_own_day finds them). Counting a
    partition of a million rows would take longer than dropping it."""
    from .cloudtrail import CRITICAL_EVENT_NAMES

    names = sorted(CRITICAL_EVENT_NAMES)
    cursor.execute(
        "SELECT (SELECT coalesce(sum(count), 0) FROM audits_operationday WHERE day = ANY(%s) "
        "AND NOT (operation = ANY(%s))) + (SELECT coalesce(sum(count), 0) FROM audits_dailyrollup "
        "WHERE own AND day = ANY(%s) AND NOT (operation = ANY(%s)))",
        [dropped, names, dropped, names],
    )
    return int(cursor.fetchone()[0])


def purge(cursor, horizon: datetime, *, dry_run: bool = False) -> tuple[int, int, list[str]]:
    """Detach every day partition before `horizon` (both tables) and delete the rows of the default
    partitions before it; returns (events, raw blocks, the detached tables, for `drop`).

    Runs in the purge's transaction, under the exclusive ingest lock (audits/retention.py). Every
    non-critical event of a detached day was in its partition (one is never made while the default
    partition holds rows of its day: _create_day moves them in), so the counts are exact."""
    dropped = due(cursor, horizon)
    moment = _literal(horizon)
    events = _day_events(cursor, dropped) if dropped else 0
    blocks = sum(
        _execute(cursor, f"SELECT count(*) FROM {partition_name(BLOCKS[0], day)}").fetchone()[0] for day in dropped
    )
    if dry_run:
        events += _execute(cursor, f"SELECT count(*) FROM audits_event_default WHERE event_time < {moment}").fetchone()[
            0
        ]
        blocks += _execute(
            cursor, f"SELECT count(*) FROM audits_rawblock_default WHERE last_event_time < {moment}"
        ).fetchone()[0]
        return events, blocks, []
    detached = []
    for day in dropped:
        for table, _ in TABLES:
            # Metadata only; the files go in `drop`, after the lock is released.
            cursor.execute(f"ALTER TABLE {table}_recent DETACH PARTITION {partition_name(table, day)}")
            detached.append(partition_name(table, day))
    # Rows of days that had no partition when they arrived; a block here holds only such events.
    events += _execute(cursor, f"DELETE FROM audits_event_default WHERE event_time < {moment}").rowcount
    blocks += _execute(cursor, f"DELETE FROM audits_rawblock_default WHERE last_event_time < {moment}").rowcount
    return events, blocks, detached


def leftovers(cursor) -> list[str]:
    """Day tables detached and not dropped yet: by the purge that just committed, or by one stopped
    between its commit and its drop."""
    cursor.execute(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND NOT relispartition "
        "AND relnamespace = current_schema()::regnamespace AND (relname LIKE %s OR relname LIKE %s)",
        [r"audits\_event\_p%", r"audits\_rawblock\_p%"],
    )
    return sorted(name for (name,) in cursor.fetchall())


def drop(cursor, tables: list[str]) -> None:
    """Drop detached day tables: no lock on the events, only the time the filesystem takes to free
    their files (most of a purge's time on a large day)."""
    if tables:
        cursor.execute(f"DROP TABLE IF EXISTS {', '.join(tables)}")


# --- Converting the tables ------------------------------------------------------------------------


def _sequence(cursor, table: str) -> tuple[int, bool]:
    (sequence,) = _execute(cursor, "SELECT pg_get_serial_sequence(%s, 'id')", [table]).fetchone()
    return _execute(cursor, f"SELECT last_value, is_called FROM {sequence}").fetchone()


def _restore_sequence(cursor, table: str, state: tuple[int, bool]) -> None:
    cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, %s)", [table, state[0], state[1]])


def convert(schema_editor, event_model, block_model, *, now: datetime | None = None) -> None:
    """Make the plain tables partitioned ones, every row and id kept (a migration runs it)."""
    cursor = schema_editor.connection.cursor()
    purged = _execute(cursor, "SELECT min(purged_before) FROM audits_retention").fetchone()[0]
    today = (now or timezone.now()).astimezone(UTC).date()
    wanted = {today + timedelta(days=n) for n in range(-1, AHEAD_DAYS + 1)}
    # A block belongs with the critical events that name it: kept with them, whole.
    cursor.execute(
        "UPDATE audits_rawblock SET critical = true WHERE NOT critical AND id IN "
        "(SELECT raw_block_id FROM audits_event WHERE critical AND raw_block_id IS NOT NULL)"
    )
    for table, column in TABLES:
        cursor.execute(
            f"SELECT DISTINCT (date_trunc('day', {column} AT TIME ZONE 'UTC'))::date FROM {table} "
            f"WHERE NOT critical AND {column} IS NOT NULL"
        )
        wanted.update(day for (day,) in cursor.fetchall())
    if purged is not None:
        wanted = {day for day in wanted if _midnight(day) >= purged}
    for model, (table, column) in zip((event_model, block_model), TABLES, strict=True):
        sequence = _sequence(cursor, table)
        for index in model._meta.indexes:
            schema_editor.remove_index(model, index)
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_unpartitioned")
        cursor.execute(
            f"CREATE TABLE {table} (LIKE {table}_unpartitioned INCLUDING DEFAULTS) PARTITION BY LIST (critical)"
        )
        cursor.execute(f"CREATE TABLE {table}_kept PARTITION OF {table} FOR VALUES IN (true)")
        cursor.execute(
            f"CREATE TABLE {table}_recent PARTITION OF {table} FOR VALUES IN (false) PARTITION BY RANGE ({column})"
        )
        cursor.execute(f"CREATE TABLE {table}_default PARTITION OF {table}_recent DEFAULT")
        for day in sorted(wanted):
            lower, upper = _literal(_midnight(day)), _literal(_midnight(day + timedelta(days=1)))
            cursor.execute(
                f"CREATE TABLE {partition_name(table, day)} PARTITION OF {table}_recent "
                f"FOR VALUES FROM ({lower}) TO ({upper})"
            )
        cursor.execute(f"INSERT INTO {table} SELECT * FROM {table}_unpartitioned")
        cursor.execute(f"DROP TABLE {table}_unpartitioned")  # and its identity sequence
        cursor.execute(f"CREATE SEQUENCE {table}_id_seq OWNED BY {table}.id")
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{table}_id_seq')")
        _restore_sequence(cursor, table, sequence)
        # Indexes after the rows: one sorted build per partition instead of row-by-row inserts.
        for index in model._meta.indexes:
            schema_editor.add_index(model, index)
    cursor.execute("ALTER TABLE audits_event ADD PRIMARY KEY (id, event_time, critical)")
    cursor.execute("CREATE INDEX audits_rawblock_id ON audits_rawblock (id)")
    cursor.execute(f"CREATE UNIQUE INDEX event_unique_per_account ON audits_event {event_conflict_target()}")


def event_conflict_target() -> str:
    """ON CONFLICT target (and unique index) of partitioned events: the unpartitioned key's hash of
    (recipient account, event id), then the partition keys."""
    from .fields import unique_key_sql
    from .models import Event

    (constraint,) = [c for c in Event._meta.constraints if c.name == "event_unique_per_account"]
    assert isinstance(constraint, models.UniqueConstraint)
    (expression,) = constraint.expressions
    assert isinstance(expression, models.Expression)  # a UniqueKey
    return f"({unique_key_sql(Event, expression, connection)}, event_time, critical)"


def unconvert(schema_editor, event_model, block_model) -> None:
    """Back to one plain table each, every row and id kept (the migration's reverse)."""
    cursor = schema_editor.connection.cursor()
    cursor.execute("DROP INDEX event_unique_per_account")
    cursor.execute("DROP INDEX audits_rawblock_id")
    for model, (table, _) in zip((event_model, block_model), TABLES, strict=True):
        sequence = _sequence(cursor, table)
        for index in model._meta.indexes:
            schema_editor.remove_index(model, index)
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_partitioned")
        cursor.execute(f"ALTER TABLE {table}_partitioned ALTER COLUMN id DROP DEFAULT")
        cursor.execute(f"DROP SEQUENCE {table}_id_seq")
        if table == EVENTS[0]:
            cursor.execute(f"ALTER TABLE {table}_partitioned DROP CONSTRAINT {table}_pkey")
        schema_editor.create_model(model)  # the plain table, its identity, indexes and constraints
        # Unapplying several migrations at once, Django may hand this reverse a model state without
        # columns later migrations added (their own reverses then drop them): keep every column the
        # table has, so those reverses find theirs.
        for name, kind in _execute(
            cursor,
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname NOT IN "
            "(SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped) "
            "ORDER BY a.attnum",
            [f"{table}_partitioned", table],
        ).fetchall():
            cursor.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {kind}')
        (columns,) = _execute(
            cursor,
            "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [f"{table}_partitioned"],
        ).fetchone()
        cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_partitioned")
        cursor.execute(f"DROP TABLE {table}_partitioned CASCADE")
        _restore_sequence(cursor, table, sequence)
