"""Data and helpers for the audits tests: records for the analysts' pages, cleanup of what the write
path fills, and the rollups and summaries recomputed from the stored events, to compare with the
incremental ones. Records go through the real ingestion path. The pages' fixtures are in conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.db.models import Count, Max, Min, Model
from django.db.models.functions import TruncDate

from audits import synthetic
from audits.cloudtrail import s3_context_names_object
from audits.ingest import finish_run, ingest_records, start_run
from audits.models import (
    AlertCandidate,
    BucketDay,
    DailyRollup,
    Event,
    IngestRun,
    KeyDay,
    KeyHour,
    KeyPrincipalDay,
    KeyPrincipalHour,
    KeyServiceDay,
    OperationDay,
    PrincipalDay,
    Quarantine,
    RawBlock,
)
from audits.rollups import SUMMARIES
from kmsdash.models import Total
from tests.support import ROOT, query

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
A, B = "111122223333", "444455556666"
K1 = f"arn:aws:kms:us-east-1:{A}:key/11111111-1111-4111-8111-111111111111"
K2 = f"arn:aws:kms:eu-west-1:{A}:key/22222222-2222-4222-8222-222222222222"
K3 = f"arn:aws:kms:us-east-1:{B}:key/33333333-3333-4333-8333-333333333333"

HOSTILE_UA = "<img src=x onerror=alert(1)>"
HOSTILE_ERROR = "</script><script>alert(1)</script>"
RLO = "\u202e"
HOSTILE_ROLE = f"evil{RLO}txt.exe"


def ingest(records, *, status=IngestRun.Status.SUCCEEDED) -> IngestRun:
    run = start_run(IngestRun.Kind.FILES)
    counts = ingest_records(list(records), run=run)
    return finish_run(run, counts, status=status)


def record(name="Decrypt", *, when=None, key=K1, account=A, region="us-east-1", role="app", session="s1", **extra):
    return synthetic.kms_record(
        event_name=name,
        event_time=when or NOW - timedelta(hours=1),
        key_arn=key,
        identity=extra.pop("identity", None) or synthetic.identity_role(account, role, session),
        region=region,
        recipient_account_id=account,
        **extra,
    )


def volume(n=400, seed=7):
    """Synthetic traffic over the ten days before NOW."""
    return list(synthetic.generate_records(n, seed=seed, start=NOW - timedelta(days=10), days=10))


# --- removing what outlives a test's rollback (module-scoped fixtures, property tests) ---

# Every table the write path fills; the summaries come from the write path's own list, so a new one
# cannot be forgotten here (a forgotten table leaks rows into every later test of the session).
INGESTED: tuple[type[Model], ...] = (
    Event,
    RawBlock,
    DailyRollup,
    *(summary.model for summary in SUMMARIES),
    Quarantine,
    IngestRun,
    AlertCandidate,  # what the batch leaves for the alert evaluation
    Total,  # the /metrics totals each batch and run adds to
)


def delete_ingested() -> None:
    for model in INGESTED:
        model._default_manager.all().delete()


# --- the stored rollups and summaries, and the same recomputed from the events ------------


def rollups_as_group_by() -> dict:
    """Rollups recomputed from the stored events, for comparison with the incremental ones."""
    grouped = (
        Event.objects.annotate(day=TruncDate("event_time", tzinfo=UTC))
        .values(
            "day",
            "recipient_account_id",
            "region",
            "key",
            "event_name",
            "principal",
            "service",
            "error_code",
            "after_hours",
            "own",
        )
        .annotate(n=Count("id"), first=Min("event_time"), last=Max("event_time"))
    )
    return {
        (
            r["day"],
            r["recipient_account_id"],
            r["region"],
            r["key"],
            r["event_name"],
            r["principal"],
            r["service"],
            r["error_code"],
            r["after_hours"],
            r["own"],
        ): (r["n"], r["first"], r["last"])
        for r in grouped
    }


def stored_rollups() -> dict:
    return {
        (
            r.day,
            r.account_id,
            r.region,
            r.key,
            r.operation,
            r.principal,
            r.service,
            r.error_code,
            r.after_hours,
            r.own,
        ): (
            r.count,
            r.first_seen,
            r.last_seen,
        )
        for r in DailyRollup.objects.all()
    }


def summaries_as_group_by() -> dict:
    """Every rollup summary recomputed from the stored events, in the summaries' own shape."""
    tables: dict[str, dict] = {
        "key": {},
        "operation": {},
        "principal": {},
        "key principal": {},
        "key service": {},
        "key hour": {},
        "key principal hour": {},
    }
    for e in Event.objects.filter(own=False):  # kmsdash's own calls: only the rollup counts them
        where = (e.event_time.astimezone(UTC).date(), e.recipient_account_id, e.region)
        hour = (
            e.event_time.astimezone(UTC).replace(minute=0, second=0, microsecond=0),
            e.recipient_account_id,
            e.region,
        )
        generate = e.event_name.startswith("GenerateDataKey")
        hourly = [1, bool(e.error_code), e.after_hours]
        rows = (
            (
                "key",
                (*where, e.key),
                [1, e.event_name == "Encrypt", e.event_name == "Decrypt", generate, bool(e.error_code), e.after_hours],
            ),
            ("operation", (*where, e.event_name, e.error_code, e.after_hours), [1]),
            ("principal", (*where, e.principal), [1]),
            ("key principal", (*where, e.key, e.principal), [1]),
            ("key service", (*where, e.key, e.service), [1]),
            ("key hour", (*hour, e.key), hourly),
            ("key principal hour", (*hour, e.key, e.principal), hourly),
        )
        for table, dims, counts in rows:
            first, last, *total = tables[table].get(dims, (e.event_time, e.event_time, *[0] * len(counts)))
            tables[table][dims] = (
                min(first, e.event_time),
                max(last, e.event_time),
                *(t + int(c) for t, c in zip(total, counts, strict=True)),
            )
    return tables


def stored_summaries() -> dict:
    return {
        "key": {
            (r.day, r.account_id, r.region, r.key): (
                r.first_seen,
                r.last_seen,
                r.calls,
                r.encrypt,
                r.decrypt,
                r.generate,
                r.failed,
                r.after_hours_calls,
            )
            for r in KeyDay.objects.all()
        },
        "operation": {
            (r.day, r.account_id, r.region, r.operation, r.error_code, r.after_hours): (
                r.first_seen,
                r.last_seen,
                r.count,
            )
            for r in OperationDay.objects.all()
        },
        "principal": {
            (r.day, r.account_id, r.region, r.principal): (r.first_seen, r.last_seen, r.count)
            for r in PrincipalDay.objects.all()
        },
        "key principal": {
            (r.day, r.account_id, r.region, r.key, r.principal): (r.first_seen, r.last_seen, r.count)
            for r in KeyPrincipalDay.objects.all()
        },
        "key service": {
            (r.day, r.account_id, r.region, r.key, r.service): (r.first_seen, r.last_seen, r.count)
            for r in KeyServiceDay.objects.all()
        },
        "key hour": {
            (r.hour, r.account_id, r.region, r.key): (r.first_seen, r.last_seen, r.calls, r.failed, r.after_hours_calls)
            for r in KeyHour.objects.all()
        },
        "key principal hour": {
            (r.hour, r.account_id, r.region, r.key, r.principal): (
                r.first_seen,
                r.last_seen,
                r.calls,
                r.failed,
                r.after_hours_calls,
            )
            for r in KeyPrincipalHour.objects.all()
        },
    }


def grouped_events() -> dict[tuple, tuple[int, int, datetime, datetime]]:
    """What BucketDay must hold, computed from the events in Python."""
    groups: dict[tuple, list] = {}
    for event in Event.objects.exclude(s3_bucket=""):
        dims = (
            event.event_time.astimezone(UTC).date(),
            event.recipient_account_id,
            event.region,
            event.key,
            event.s3_bucket,
        )
        group = groups.setdefault(dims, [0, 0, event.event_time, event.event_time])
        group[0] += 1
        group[1] += s3_context_names_object(event.encryption_context)
        group[2], group[3] = min(group[2], event.event_time), max(group[3], event.event_time)
    return {dims: tuple(group) for dims, group in groups.items()}


def summary_rows() -> dict[tuple, tuple[int, int, datetime, datetime]]:
    return {
        (row.day, row.account_id, row.region, row.key, row.s3_bucket): (
            row.count,
            row.object_calls,
            row.first_seen,
            row.last_seen,
        )
        for row in BucketDay.objects.all()
    }


# --- databases shared with worker processes (the drills, the S3 fan-out) ------------------------------------------------------------------------------------


def stored(url: str) -> dict:
    """What a run leaves behind, in a form two runs can be compared by."""
    return {
        "events": query(url, "SELECT recipient_account_id, event_id FROM audits_event ORDER BY 1, 2"),
        "rollups": query(
            url,
            "SELECT day, key, operation, principal, error_code, after_hours, sum(count) FROM audits_dailyrollup"
            " GROUP BY day, key, operation, principal, error_code, after_hours ORDER BY 1, 2, 3, 4, 5, 6",
        ),
        "keydays": query(
            url,
            "SELECT day, key, sum(calls), sum(encrypt), sum(decrypt), sum(generate), sum(failed)"
            " FROM audits_keyday GROUP BY day, key ORDER BY 1, 2",
        ),
    }


def environment(database: str, tmp_path: Path, broker: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KMSDASH_", "DJANGO_"))},
        "DJANGO_SETTINGS_MODULE": "kmsdash.settings",
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker,
        "KMSDASH_VAR_DIR": str(tmp_path / "var"),
        "KMSDASH_S3_INITIAL_DAYS": "2",
        "KMSDASH_LOG_LEVEL": "WARNING",
    }


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def index_copies(index: str) -> list[str]:
    """PostgreSQL: the index itself, or on a partitioned table the copy each partition has of it
    (named after the partition), as query plans name them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT relid::text FROM pg_partition_tree(%s) WHERE isleaf", [index])
        return [name for (name,) in cursor.fetchall()] or [index]
