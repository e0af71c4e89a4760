"""Every rollup and summary, declared once: the table, its dimensions and what it counts.

Each entry of SUMMARIES says which dimensions of an event a table groups by and which counts it
keeps; everything else is derived from it:

- the write (audits/ingest.py): the PostgreSQL upserts over the inserted events, and on SQLite the
  same sums computed in Python from each dimension's `value` and each count's `test`;
- the reads (audits/selectors.py): which filters a summary can answer, and the key measures as SQL
  aggregates over the rollup or over KeyDay;
- alias re-attribution (audits/services.py): the tables with a `key` dimension, and their rows merged;
- the tests' cleanup of every table the write path fills.

A condition (`where` of a count or of a summary) is SQL over the columns of one event named as the
dimensions are named here (day, account_id, region, key, operation, principal, service,
error_code, after_hours, s3_bucket) plus encryption_context; the write makes the inserted events'
columns carry these names. Conditions that the reads apply to rollup rows too use only dimensions,
and SQL that PostgreSQL and SQLite both accept.

Adding a summary: its model (with a unique constraint over its dimensions), an entry here, and a
migration that creates and backfills it. Every summary keeps first_seen and last_seen as well.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import models

from .cloudtrail import NormalizedEvent, s3_context_names_object
from .models import (
    BucketDay,
    DailyRollup,
    KeyDay,
    KeyHour,
    KeyPrincipalDay,
    KeyPrincipalErrorHour,
    KeyPrincipalHour,
    KeyServiceDay,
    OperationDay,
    PrincipalDay,
    QuotaMinute,
)


@dataclass(frozen=True)
class Dimension:
    """A column of a summary, with its SQL over an event row and its value for one parsed event."""

    column: str
    sql: str
    value: Callable[[NormalizedEvent], Any]


@dataclass(frozen=True)
class Count:
    """A count column: the events it counts (`where`, SQL, and `test`, the same in Python), or all."""

    column: str
    where: str | None = None
    test: Callable[[NormalizedEvent], bool] | None = None


@dataclass(frozen=True)
class Summary:
    """A table of event counts by `dims`, increased by each batch's new events in the same transaction.

    where: (SQL condition, the same as a predicate) on the events the table counts at all, or None
    for every event."""

    model: type[models.Model]
    dims: tuple[Dimension, ...]
    counts: tuple[Count, ...]
    where: tuple[str, Callable[[NormalizedEvent], bool]] | None = None
    # Count kmsdash's own calls like everyone's (they use AWS's request quota all the same); other
    # tables either keep them apart (an `own` dimension) or leave them out.
    with_own: bool = False

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def counted(self) -> tuple[str, Callable[[NormalizedEvent], bool]] | None:
        """The events the write adds to this table: `where`, and kmsdash's own calls only if the
        table keeps them apart (an `own` dimension)."""
        if self.with_own or "own" in self.dim_names:
            return self.where
        if self.where is None:
            return ("NOT own", _not_own)
        sql, test = self.where
        return (f"({sql}) AND NOT own", lambda event: not event.own and test(event))

    @property
    def dim_names(self) -> tuple[str, ...]:
        return tuple(dim.column for dim in self.dims)

    @property
    def count_names(self) -> tuple[str, ...]:
        return tuple(count.column for count in self.counts)

    @property
    def dim_columns(self) -> str:
        return ", ".join(self.dim_names)

    @property
    def count_columns(self) -> str:
        return ", ".join(self.count_names)

    def sum_sql(self, count: Count) -> str:
        """`count` (a Count of another summary) summed over this table's rows, in portable SQL."""
        if count.column in self.count_names:
            return f"SUM({count.column})"
        if count.where is None:
            return "SUM(count)"
        return f"SUM(CASE WHEN {count.where} THEN count ELSE 0 END)"


def _not_own(event: NormalizedEvent) -> bool:
    return not event.own


def _dim(column: str, field: str | None = None) -> Dimension:
    return Dimension(column, field or column, operator.attrgetter(field or column))


DAY = Dimension("day", "(event_time AT TIME ZONE 'UTC')::date", lambda event: event.event_time.date().isoformat())
ACCOUNT = _dim("account_id", "recipient_account_id")
REGION = _dim("region")
KEY = _dim("key")
OPERATION = _dim("operation", "event_name")
PRINCIPAL = _dim("principal")
SERVICE = _dim("service")
ERROR_CODE = _dim("error_code")
AFTER_HOURS = _dim("after_hours")
S3_BUCKET = _dim("s3_bucket")
OWN = _dim("own")
# The start of the event's UTC hour; on SQLite in Django's text format for a naive UTC time.
HOUR = Dimension(
    "hour",
    "date_trunc('hour', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    lambda event: str(event.event_time.replace(minute=0, second=0, microsecond=0, tzinfo=None)),
)
# The start of the event's UTC minute, the same way.
MINUTE = Dimension(
    "minute",
    "date_trunc('minute', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    lambda event: str(event.event_time.replace(second=0, microsecond=0, tzinfo=None)),
)
QUOTA_CLASS = _dim("quota_class")
SCOPE = (DAY, ACCOUNT, REGION)  # every daily table counts per UTC day, recipient account and region
HOUR_SCOPE = (HOUR, ACCOUNT, REGION)

ALL = (Count("count"),)

# The per-key figures of the keys page: KeyDay's columns, and conditional sums over the rollup.
KEY_MEASURES = (
    Count("calls"),
    Count("encrypt", "operation = 'Encrypt'", lambda event: event.event_name == "Encrypt"),
    Count("decrypt", "operation = 'Decrypt'", lambda event: event.event_name == "Decrypt"),
    Count(
        "generate",
        "substr(operation, 1, 15) = 'GenerateDataKey'",
        lambda event: event.event_name.startswith("GenerateDataKey"),
    ),
    Count("failed", "error_code <> ''", lambda event: bool(event.error_code)),
    Count("after_hours_calls", "after_hours", lambda event: bool(event.after_hours)),
)

# audits.cloudtrail.s3_context_names_object in SQL (PostgreSQL): `aws:s3:arn` is a string with a '/'
# somewhere after its first ':s3:::' (LIKE finds one after any ':s3:::', so after the first one too).
S3_OBJECT_SQL = (
    "jsonb_typeof(encryption_context -> 'aws:s3:arn') = 'string' "
    "AND encryption_context ->> 'aws:s3:arn' LIKE '%:s3:::%/%'"
)

_BY_NAME = {count.column: count for count in KEY_MEASURES}
HOURLY_CALLS = (_BY_NAME["calls"], _BY_NAME["failed"], _BY_NAME["after_hours_calls"])

# Per minute, only the calls that count against a request quota (audits.cloudtrail.quota_class_of).
THROTTLED = Count(
    "throttled", "error_code = 'ThrottlingException'", lambda event: event.error_code == "ThrottlingException"
)
QUOTA_CALLS = (Count("calls"), THROTTLED)
COUNTS_AGAINST_A_QUOTA = ("quota_class <> ''", lambda event: event.quota_class != "")

# The rollup alone keeps kmsdash's own calls (apart, by OWN); every other table leaves them out.
ROLLUP = Summary(DailyRollup, (*SCOPE, KEY, OPERATION, PRINCIPAL, SERVICE, ERROR_CODE, AFTER_HOURS, OWN), ALL)
KEY_DAY = Summary(KeyDay, (*SCOPE, KEY), KEY_MEASURES)
# Per UTC minute and request quota, for capacity (and the alert candidates' quota minutes).
QUOTA_MINUTE = Summary(
    QuotaMinute, (MINUTE, ACCOUNT, REGION, QUOTA_CLASS), QUOTA_CALLS, where=COUNTS_AGAINST_A_QUOTA, with_own=True
)

SUMMARIES = (
    ROLLUP,
    KEY_DAY,
    Summary(OperationDay, (*SCOPE, OPERATION, ERROR_CODE, AFTER_HOURS), ALL),
    Summary(PrincipalDay, (*SCOPE, PRINCIPAL), ALL),
    Summary(KeyPrincipalDay, (*SCOPE, KEY, PRINCIPAL), ALL),
    Summary(KeyServiceDay, (*SCOPE, KEY, SERVICE), ALL),
    # Only the events that name a bucket: the others would add a row per key and day for nothing.
    Summary(
        BucketDay,
        (*SCOPE, KEY, S3_BUCKET),
        (
            Count("count"),
            Count("object_calls", S3_OBJECT_SQL, lambda event: s3_context_names_object(event.encryption_context)),
        ),
        where=("s3_bucket <> ''", lambda event: event.s3_bucket != ""),
    ),
    # Hourly, for alerts and the hourly views.
    Summary(KeyHour, (*HOUR_SCOPE, KEY), HOURLY_CALLS),
    Summary(KeyPrincipalHour, (*HOUR_SCOPE, KEY, PRINCIPAL), HOURLY_CALLS),
    # Only failed calls, per error code: a burst of one error is judged against its own past.
    Summary(
        KeyPrincipalErrorHour,
        (*HOUR_SCOPE, KEY, PRINCIPAL, ERROR_CODE),
        (Count("failed"),),
        where=("error_code <> ''", lambda event: bool(event.error_code)),
    ),
    # Per UTC minute and request quota, for capacity: the rate is a minute's calls / 60. Who made a
    # peak minute's calls is read from that minute's events (capacity.selectors): a table per key,
    # principal and service as well cost ~570 B/event where minutes hold few calls (bench/ingest_bench.py).
    QUOTA_MINUTE,
)

# Every dimension any table keeps, each once, in declaration order: the columns the write reads
# off the inserted events.
DIMENSIONS = tuple({dim.column: dim for summary in SUMMARIES for dim in summary.dims}.values())


def keyed() -> tuple[Summary, ...]:
    """The tables with a key dimension: those that alias re-attribution re-keys."""
    return tuple(summary for summary in SUMMARIES if KEY.column in summary.dim_names)
