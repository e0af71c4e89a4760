"""An optional read replica for the pages (DATABASE_REPLICA_URL).

Reads go to the replica only when all of these hold, and to the primary otherwise:

- a replica is configured (the `replica` alias exists);
- the read happens while a web request with a safe method (GET, HEAD) is being answered, which
  ReplicaReadsMiddleware marks: the pages and their fragments. A POST (acknowledging an alert,
  accepting a finding, an export) reads what it is about to change from the primary, and Celery
  workers, beat and management commands (ingestion, rollups, alert evaluation, retention) never
  see the mark, so they read what they wrote;
- the model belongs to one of the data apps (REPLICA_APPS). Sessions, users, two-factor devices,
  the login lockout, export audits and beat schedules always use the primary: a login written a
  moment ago must not be missing from a replica that is a few hundred milliseconds behind.

Writes always go to the primary, and migrations run only there (a replica is read-only and copies
the primary's schema by replication).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.http import HttpRequest, HttpResponse

REPLICA = "replica"
# The apps whose tables the pages read: events, rollups and summaries, costs, inventory, alerts and
# the delivery ledger (the health page).
REPLICA_APPS = frozenset({"audits", "costs", "inventory", "alerts", "notify"})
SAFE_METHODS = frozenset({"GET", "HEAD"})

_page_reads: ContextVar[bool] = ContextVar("kmsdash_page_reads", default=False)


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


@contextmanager
def page_reads():
    """Within this block, reads of the data apps may go to the replica (see the module's rules)."""
    token = _page_reads.set(True)
    try:
        yield
    finally:
        _page_reads.reset(token)


class ReplicaRouter:
    def db_for_read(self, model: type[Any], **hints: Any) -> str:
        if _page_reads.get() and model._meta.app_label in REPLICA_APPS and replica_configured():
            return REPLICA
        return DEFAULT_DB_ALIAS

    def db_for_write(self, model: type[Any], **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # one database, two ways to reach it

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS


class ReplicaReadsMiddleware:
    """Marks GET and HEAD requests as page reads for ReplicaRouter (nothing to do without a replica)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method not in SAFE_METHODS or not replica_configured():
            return self.get_response(request)
        with page_reads():
            return self.get_response(request)
