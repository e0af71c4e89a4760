"""The audit CSV export: exactly the events the explorer's filter selects, streamed and audited.

The web view and `manage.py export_audit_csv` share `event_pages` and the writer, so the same
filter over the same data gives the same bytes either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import NotSupportedError, connections
from django.db.models import Case, CharField, F, Func, Max, Q, QuerySet, Value, When
from django.http import HttpRequest, HttpResponseBadRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from kmsdash.csvexport import (
    RISKY_FIRST_CHARACTERS,
    audited_csv_pages,
    neutralize_text,
    start_export_audit,
    web_row_cap,
)
from kmsdash.dates import parse_utc
from kmsdash.models import ExportAudit
from kmsdash.roles import ADMIN, has_role

from .filters import EventFilter, explorer_window
from .models import Event

EXPORT_PERMISSION = "kmsdash.export_audit_csv"
KIND = "events"
PAGE_ROWS = 2000

# (CSV header, Event field)
COLUMNS = (
    ("event_time", "event_time"),
    ("event_id", "event_id"),
    ("recipient_account_id", "recipient_account_id"),
    ("region", "region"),
    ("event_name", "event_name"),
    ("key", "key"),
    ("principal", "principal"),
    ("principal_type", "principal_type"),
    ("session_name", "session_name"),
    ("service", "service"),
    ("source_ip", "source_ip"),
    ("user_agent", "user_agent"),
    ("error_code", "error_code"),
    ("error_message", "error_message"),
    ("after_hours", "after_hours"),
    ("read_only", "read_only"),
    ("encryption_context", "encryption_context"),
    ("request_id", "request_id"),
    ("shared_event_id", "shared_event_id"),
    ("vpc_endpoint_id", "vpc_endpoint_id"),
    ("s3_bucket", "s3_bucket"),
)
HEADER = tuple(header for header, _ in COLUMNS)
_FIELDS = tuple(field for _, field in COLUMNS)


def may_export(user) -> bool:
    """Admins, and anyone granted the export permission on its own (e.g. an auditor)."""
    return has_role(user, ADMIN) or user.has_perm(EXPORT_PERMISSION)


def export_permission_required(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
        if not may_export(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    # Function attributes, read by the role x URL matrix test (mypy knows no such attributes).
    wrapped.kmsdash_roles = (ADMIN,)  # type: ignore[attr-defined]
    wrapped.kmsdash_permission = EXPORT_PERMISSION  # type: ignore[attr-defined]
    return wrapped


@dataclass(frozen=True)
class Snapshot:
    """What an export covers, fixed when it starts: the events already stored (ids up to last_id) when
    it started (as_of)."""

    as_of: datetime
    last_id: int

    @classmethod
    def now(cls) -> Snapshot:
        return cls(as_of=timezone.now(), last_id=Event.objects.aggregate(last=Max("id"))["last"] or 0)


def audit_filters(event_filter: EventFilter, snapshot: Snapshot) -> dict[str, Any]:
    return {**event_filter.as_params(), "as_of": snapshot.as_of.isoformat(), "last_id": snapshot.last_id}


class IsoUtcText(Func):
    """A datetime column as the export writes it, computed by the database: ISO 8601 in UTC with
    a Z, microseconds only when there are some (as `datetime.isoformat`). Loading an aware
    datetime and formatting it in Python took a third of the export's CPU."""

    arity = 1
    output_field = CharField()

    def as_sql(self, compiler, connection, function=None, template=None, arg_joiner=None, **extra_context):
        raise NotSupportedError(f"IsoUtcText is not implemented for {connection.vendor}")

    def as_postgresql(self, compiler, connection, **extra_context):
        template = (
            "to_char(%(expressions)s AT TIME ZONE 'UTC', CASE WHEN mod(date_part('microseconds', %(expressions)s)"
            '::bigint, 1000000) = 0 THEN \'YYYY-MM-DD"T"HH24:MI:SS"Z"\' ELSE \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\' END)'
        )
        return super().as_sql(compiler, connection, template=template, **extra_context)

    def as_sqlite(self, compiler, connection, **extra_context):
        # Django stores naive UTC as datetime.__str__: 'YYYY-MM-DD HH:MM:SS[.ffffff]'.
        template = "(replace(%(expressions)s, ' ', 'T') || 'Z')"
        return super().as_sql(compiler, connection, template=template, **extra_context)


def _bool_text(field: str) -> Case:
    return Case(
        When(**{field: True}, then=Value("true")),
        When(**{field: False}, then=Value("false")),
        default=Value(""),
        output_field=CharField(),
    )


_TEXT_FIELDS = tuple(f for f in _FIELDS if f not in ("event_time", "encryption_context", "after_hours", "read_only"))
# Each page row: the CSV's cells in order, then the keyset id and the first character of every
# text cell, so that a row needing no neutralisation (nearly all) is written as read.
_CELLS = {
    "event_time": IsoUtcText("event_time"),
    "after_hours": _bool_text("after_hours"),
    "read_only": _bool_text("read_only"),
}
_ANNOTATIONS = {f"{field}_text": expression for field, expression in _CELLS.items()} | {
    "text_firsts": Func(
        *(Func(F(field), template="substr(%(expressions)s, 1, 1)") for field in _TEXT_FIELDS),
        template="(%(expressions)s)",
        arg_joiner=" || ",
        output_field=CharField(),
    ),
}
_READ = (*(f"{field}_text" if field in _CELLS else field for field in _FIELDS), "id", "text_firsts")
_WIDTH = len(_FIELDS)
_TIME = _FIELDS.index("event_time")
_CONTEXT = _FIELDS.index("encryption_context")
_ID = _WIDTH
_FIRSTS = _WIDTH + 1
_TEXT_CELLS = tuple(_FIELDS.index(field) for field in _TEXT_FIELDS)


def _context_text(value: str, cache: dict[str, str]) -> str:
    """One JSON text per context whatever the backend stores (jsonb reorders keys): sorted keys."""
    text = cache.get(value)
    if text is None:
        loaded = json.loads(value)
        text = cache[value] = "" if loaded is None else json.dumps(loaded, ensure_ascii=False, sort_keys=True)
    return text


def _page_query(selected: QuerySet, after: tuple[datetime, int] | None) -> tuple[str, Any]:
    page = selected
    if after is not None:
        # The leading range lets the (event_time, id) index start at the cursor.
        page = page.filter(event_time__gte=after[0]).filter(Q(event_time__gt=after[0]) | Q(id__gt=after[1]))
    page = page.annotate(**_ANNOTATIONS).order_by("event_time", "id").values_list(*_READ)[:PAGE_ROWS]
    return page.query.get_compiler(using=page.db).as_sql()


def event_pages(event_filter: EventFilter, snapshot: Snapshot) -> Iterator[list[Sequence[Any]]]:
    """The selected events of the snapshot, oldest first, as pages of inert CSV cells.

    Read in keyset pages of PAGE_ROWS: each page is one small indexed query whatever the export's
    size (a server-side cursor outside a transaction is materialised whole by PostgreSQL before
    the first row), and no cursor stays open across the download. Events stored while it streams
    (ingestion keeps running, and late CloudTrail events carry old times) are past `last_id`, so
    the file always matches its audit row and a re-run of the same snapshot.

    The filter builds the SQL and the database formats times and flags, but the rows are read
    from the cursor as the driver returns them: Django's per-value converters would cost more
    than the rest of the export.
    """
    # Bounded by id only: an event dated after as_of (a clock behind AWS's, a record from the future)
    # is in the explorer, so it is in the export too.
    selected = event_filter.events().filter(id__lte=snapshot.last_id)
    connection = connections[selected.db]
    after: tuple[datetime, int] | None = None
    risky = RISKY_FIRST_CHARACTERS
    while True:
        sql, params = _page_query(selected, after)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        contexts: dict[str, str] = {}
        page: list[Sequence[Any]] = []
        for row in rows:
            cells = row[:_WIDTH]
            context = row[_CONTEXT]
            suspect = not risky.isdisjoint(row[_FIRSTS])
            if context is not None or suspect:
                cells = list(cells)
                if context is not None:
                    cells[_CONTEXT] = _context_text(context, contexts)
                if suspect:
                    for index in _TEXT_CELLS:
                        cells[index] = neutralize_text(cells[index])
            page.append(cells)
        if len(rows) < PAGE_ROWS:
            if page:
                yield page
            return
        last = rows[-1]
        after = (parse_utc(last[_TIME]), last[_ID])
        del rows  # keep only one page in memory while the next is read
        yield page
        del page


def export_filename(as_of: datetime) -> str:
    # Server-generated only: nothing from the request may reach a response header.
    return f"kms-events-{as_of.astimezone(UTC):%Y%m%dT%H%M%SZ}.csv"


def stream_export(event_filter: EventFilter, snapshot: Snapshot, audit: ExportAudit) -> Iterator[bytes]:
    return audited_csv_pages(HEADER, event_pages(event_filter, snapshot), audit)


@require_POST  # a POST with the page's CSRF token: another site cannot make an admin's browser export
@never_cache
@export_permission_required
def events_export(request: HttpRequest) -> HttpResponseBase:
    # The explorer's window: an export without since starts where the explorer's default period does.
    event_filter, _ = explorer_window(request.POST)
    if event_filter.errors:
        return HttpResponseBadRequest("\n".join(event_filter.errors), content_type="text/plain; charset=utf-8")
    snapshot = Snapshot.now()
    audit = start_export_audit(
        user=request.user, kind=KIND, filters=audit_filters(event_filter, snapshot), row_cap=web_row_cap()
    )
    response = StreamingHttpResponse(
        stream_export(event_filter, snapshot, audit), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{export_filename(snapshot.as_of)}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
