"""Running totals of the ledgers, for /metrics: a scrape reads these rows, never a ledger's history.

A total is (name, labels) -> value. Every writer of a ledger counter adds to the matching totals in
the SAME transaction as its ledger change (`add` inside the writer's `transaction.atomic()`), so a
total and the ledger's aggregate commit or roll back together and can never drift apart:

- events_ingested{source}, records_quarantined{source}: each ingestion batch, as it adds to its
  run's row (audits/ingest.py `Ingestor._write_batch`), and a run's close when it corrects its row;
- ingest_runs{source,status}: a run counts under `running` from `start_run` and moves to its
  outcome in `finish_run` or `close_interrupted_runs`, each under the run row's lock, so a run is
  moved once however many closers race (audits/ingest.py, audits/services.py);
- alert_delivery_attempts{channel_type,outcome}: an attempt as it gets its outcome
  (notify/delivery.py `_finish`);
- alert_notifications{channel_type,state} for the final states (delivered, failed: `_finish`;
  suppressed: notify/services.py `notify_alert`). Pending ones are the live queue, counted by query.

`from_ledgers()` recomputes every total from the ledgers: the backfill migration writes it once
(with the workers stopped, so the ledgers are quiet), and the tests compare it with `read()`.
Channels of alert totals are labelled by their type when the attempt finished; a channel deleted
later (which deletes its ledger rows) keeps its counts, as a Prometheus counter must.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping

from django.apps import apps as installed_apps
from django.apps.registry import Apps
from django.db import connections, router
from django.db.models import Count, Sum

EVENTS = "events_ingested"
QUARANTINED = "records_quarantined"
RUNS = "ingest_runs"
ATTEMPTS = "alert_delivery_attempts"
NOTIFICATIONS = "alert_notifications"
FINAL_NOTIFICATION_STATES = ("delivered", "failed", "suppressed")

# (name, sorted label items): hashable, and the same whatever order the labels were given in.
Key = tuple[str, tuple[tuple[str, str], ...]]


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted((label, str(value)) for label, value in labels.items()))


def labels_text(labels: Iterable[tuple[str, str]]) -> str:
    """The stored form of a key's labels: canonical JSON, so equal labels are one row."""
    return json.dumps(dict(sorted(labels)), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def add(name: str, labels: Mapping[str, str], amount: int) -> None:
    """Add `amount` (negative to move a count away) to one total, creating it at 0 first."""
    add_many({key(name, **labels): amount})


def add_many(amounts: Mapping[Key, int]) -> None:
    """Add to several totals in one statement: INSERT ... ON CONFLICT DO UPDATE value = value + excluded.

    The upsert is atomic on both PostgreSQL and SQLite (3.24+): two writers adding to the same row
    at once both count, the second waiting for the first's row lock. Rows are written in key order,
    so two transactions touching the same totals lock them in the same order and cannot deadlock on
    them. Call it last in the ledger's transaction: the row locks are then held only until commit.
    """
    from .models import Total

    merged: dict[tuple[str, str], int] = defaultdict(int)
    for (name, labels), amount in amounts.items():
        merged[(name, labels_text(labels))] += amount
    rows = sorted((name, labels, amount) for (name, labels), amount in merged.items() if amount)
    if not rows:
        return
    connection = connections[router.db_for_write(Total)]
    quote = connection.ops.quote_name
    table = quote(Total._meta.db_table)
    # One row per key in the statement: PostgreSQL refuses to update a row twice in one upsert.
    values = ", ".join(["(%s, %s, %s)"] * len(rows))
    sql = (
        f"INSERT INTO {table} ({quote('name')}, {quote('labels')}, {quote('value')}) VALUES {values} "
        f"ON CONFLICT ({quote('name')}, {quote('labels')}) "
        f"DO UPDATE SET {quote('value')} = {table}.{quote('value')} + excluded.{quote('value')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [part for row in rows for part in row])


def read() -> dict[Key, int]:
    """Every total that is not zero."""
    from .models import Total

    return {
        (name, tuple(sorted(json.loads(labels).items()))): value
        for name, labels, value in Total.objects.exclude(value=0).values_list("name", "labels", "value")
    }


def from_ledgers(apps: Apps = installed_apps) -> dict[Key, int]:
    """Every total recomputed from the ledgers (the nonzero ones, as `read` gives them).

    `apps` is a migration's historical registry when the backfill calls it."""
    IngestRun = apps.get_model("audits", "IngestRun")
    DeliveryAttempt = apps.get_model("notify", "DeliveryAttempt")
    Notification = apps.get_model("notify", "Notification")
    totals: dict[Key, int] = defaultdict(int)
    runs = (
        IngestRun.objects.order_by()
        .values("kind", "status")
        .annotate(runs=Count("id"), events=Sum("events_new", default=0), bad=Sum("quarantined", default=0))
    )
    for row in runs:
        totals[key(RUNS, source=row["kind"], status=row["status"])] += row["runs"]
        totals[key(EVENTS, source=row["kind"])] += row["events"]
        totals[key(QUARANTINED, source=row["kind"])] += row["bad"]
    attempts = (
        DeliveryAttempt.objects.filter(ok__isnull=False)
        .order_by()
        .values("channel__type", "ok")
        .annotate(n=Count("id"))
    )
    for row in attempts:
        outcome = "succeeded" if row["ok"] else "failed"
        totals[key(ATTEMPTS, channel_type=row["channel__type"], outcome=outcome)] += row["n"]
    notifications = (
        Notification.objects.filter(state__in=FINAL_NOTIFICATION_STATES)
        .order_by()
        .values("channel__type", "state")
        .annotate(n=Count("id"))
    )
    for row in notifications:
        totals[key(NOTIFICATIONS, channel_type=row["channel__type"], state=row["state"])] += row["n"]
    return {k: v for k, v in totals.items() if v}


def rebuild(apps: Apps = installed_apps) -> int:
    """Replace every total with `from_ledgers()` (the backfill); returns how many rows it wrote."""
    Total = apps.get_model("kmsdash", "Total")
    totals = from_ledgers(apps)
    Total.objects.all().delete()
    Total.objects.bulk_create(
        Total(name=name, labels=labels_text(labels), value=value) for (name, labels), value in sorted(totals.items())
    )
    return len(totals)
