"""The audit CSV export: exactly the events the explorer's filter selects, streamed and audited.

The web view and `manage.py export_audit_csv` share `event_rows` and the writer, so the same
filter over the same data gives the same bytes either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Max, Q
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from kmsdash.csvexport import audited_csv, start_export_audit
from kmsdash.models import ExportAudit
from kmsdash.roles import ADMIN, has_role

from .filters import EventFilter
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
_CONTEXT = _FIELDS.index("encryption_context")
_TIME = _FIELDS.index("event_time")


def may_export(user) -> bool:
    """Admins, and anyone granted the export permission on its own (e.g. an auditor)."""
    return has_role(user, ADMIN) or user.has_perm(EXPORT_PERMISSION)


def export_permission_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not may_export(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    wrapped.kmsdash_roles = (ADMIN,)
    wrapped.kmsdash_permission = EXPORT_PERMISSION
    return wrapped


@dataclass(frozen=True)
class Snapshot:
    """What an export covers, fixed when it starts: events up to this time, already stored then."""

    as_of: datetime
    last_id: int

    @classmethod
    def now(cls) -> Snapshot:
        return cls(as_of=timezone.now(), last_id=Event.objects.aggregate(last=Max("id"))["last"] or 0)


def audit_filters(event_filter: EventFilter, snapshot: Snapshot) -> dict[str, Any]:
    return {**event_filter.as_params(), "as_of": snapshot.as_of.isoformat(), "last_id": snapshot.last_id}


def event_rows(event_filter: EventFilter, snapshot: Snapshot) -> Iterator[list[Any]]:
    """The selected events of the snapshot, oldest first, as CSV cells.

    Read in keyset pages of PAGE_ROWS: the first bytes leave after one small query whatever the
    export's size (a server-side cursor outside a transaction is materialised whole by PostgreSQL
    before the first row), and no cursor stays open across the download. Events stored while it
    streams (ingestion keeps running, and late CloudTrail events carry old times) are past
    `last_id`, so the file always matches its audit row and a re-run of the same snapshot.
    """
    selected = event_filter.events().filter(event_time__lte=snapshot.as_of, id__lte=snapshot.last_id)
    after: tuple[datetime, int] | None = None
    while True:
        page = selected
        if after is not None:
            # The leading range lets the (event_time, id) index start at the cursor.
            page = page.filter(event_time__gte=after[0]).filter(Q(event_time__gt=after[0]) | Q(id__gt=after[1]))
        rows = list(page.order_by("event_time", "id").values_list("id", *_FIELDS)[:PAGE_ROWS])
        for row in rows:
            cells = list(row[1:])
            cells[_TIME] = cells[_TIME].astimezone(UTC).isoformat().replace("+00:00", "Z")
            context = cells[_CONTEXT]
            cells[_CONTEXT] = "" if context is None else json.dumps(context, ensure_ascii=False, sort_keys=True)
            yield cells
        if len(rows) < PAGE_ROWS:
            return
        after = (rows[-1][1 + _TIME], rows[-1][0])


def export_filename(as_of: datetime) -> str:
    # Server-generated only: nothing from the request may reach a response header.
    return f"kms-events-{as_of.astimezone(UTC):%Y%m%dT%H%M%SZ}.csv"


def stream_export(event_filter: EventFilter, snapshot: Snapshot, audit: ExportAudit) -> Iterator[bytes]:
    return audited_csv(HEADER, event_rows(event_filter, snapshot), audit)


@require_GET
@never_cache
@export_permission_required
def events_export(request: HttpRequest) -> HttpResponse:
    event_filter = EventFilter.from_querydict(request.GET)
    if event_filter.errors:
        return HttpResponseBadRequest("\n".join(event_filter.errors), content_type="text/plain; charset=utf-8")
    snapshot = Snapshot.now()
    audit = start_export_audit(user=request.user, kind=KIND, filters=audit_filters(event_filter, snapshot))
    response = StreamingHttpResponse(
        stream_export(event_filter, snapshot, audit), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{export_filename(snapshot.as_of)}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
