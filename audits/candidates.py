"""Alert candidates: what alert evaluation needs of each batch's new events, written with them.

Every ingest batch adds, in its own transaction (audits/ingest.py), AlertCandidate rows for the
events it inserted (never its duplicates), so evaluation (alerts/detections.py) reads a few hundred
small rows per 10,000 events instead of scanning the events, and never decompresses a raw block:

- "group": the new events (kmsdash's own calls left out, as every detection leaves them out) per
  (UTC hour, recipient account, region, key, principal, principal type, caller account, error code,
  after-hours), with their count and first and last event times. Every event-level condition of a
  detection (failed, after hours, who the caller is) is a condition on these columns, so a
  detection filters the groups exactly as it filtered the events.
- "call": each new successful key-management call (CRITICAL_EVENT_NAMES), with its event id and
  the request fields the detections read (alias name, policy, grantee, operations) as JSON text.
- "minute": each (minute, account, region, quota class) the batch's calls touched whose total after
  the batch reached QUOTA_CANDIDATE_SHARE of the lowest quota that can apply to it (so a
  quota-headroom ratio below that share judges only minutes from it up), or that holds throttled
  calls.

Evaluation reads the candidates above its watermark and deletes them in the transaction that moves
the watermark past them. PostgreSQL writes them in the batch's one INSERT statement
(`pg_ctes`); SQLite (and the migration that fills them for events not yet judged) through
`build`, the same rules in Python.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from django.conf import settings

from .cloudtrail import CRITICAL_EVENT_NAMES, CUSTOM_KEY_STORE, SYMMETRIC
from .models import AlertCandidate

# The key-management calls kept as candidates (the critical-event operations and what key-exposed reads).
CALL_OPERATIONS = tuple(sorted(CRITICAL_EVENT_NAMES))
# Of those, the ones whose request fields a detection reads, and the fields.
DETAIL_OPERATIONS = frozenset({"UpdateAlias", "DeleteAlias", "PutKeyPolicy", "CreateKey", "CreateGrant"})
DETAIL_FIELDS = ("aliasName", "policy", "granteePrincipal", "operations")
QUOTA_CANDIDATE_SHARE = 0.1

GROUP_COLUMNS = (
    "account_id",
    "region",
    "key",
    "principal",
    "principal_type",
    "caller_account_id",
    "error_code",
    "after_hours",
)
_TABLE = AlertCandidate._meta.db_table
_COLUMNS = (
    "kind, at, account_id, region, key, principal, principal_type, caller_account_id, error_code, after_hours, "
    "n, first_seen, last_seen, event_pk, event_name, service, detail, quota_class"
)


class EventLike(Protocol):
    event_time: datetime
    event_name: str
    recipient_account_id: str
    region: str
    key: str
    principal: str
    principal_type: str
    caller_account_id: str
    error_code: str
    after_hours: bool
    own: bool
    service: str
    quota_class: str


def wants_detail(event: EventLike) -> bool:
    return event.event_name in DETAIL_OPERATIONS and not event.error_code and not event.own


def detail_of(record: dict | bytes | str | None) -> str:
    """The request fields the detections read, as JSON text ('' when the record has none)."""
    if isinstance(record, bytes | str):
        record = orjson.loads(record)
    request = record.get("requestParameters") if isinstance(record, dict) else None
    if not isinstance(request, dict):
        return ""
    kept = {name: request[name] for name in DETAIL_FIELDS if name in request}
    return json.dumps(kept, ensure_ascii=False) if kept else ""


def request_of(detail: str) -> dict | None:
    """A call candidate's detail as the record's shape the detections read, or None without one."""
    return {"requestParameters": json.loads(detail)} if detail else None


def quota_floors() -> dict[str, float]:
    """Per quota class, the calls in one minute from which a touched minute is a candidate: the
    share of the lowest quota that may apply to a call of the class in any account or region.
    Symmetric calls on keys in a custom key store count against that store's quota as well."""
    from capacity import quotas

    overrides: dict[tuple[str, str, str], float] = settings.KMSDASH_KMS_QUOTAS
    lowest: dict[str, float] = {}
    defaults = {
        SYMMETRIC: [*quotas.SYMMETRIC_BY_REGION.values(), quotas.SYMMETRIC_DEFAULT],
        **{name: [value] for name, value in {**quotas.OPERATION_DEFAULTS, **quotas.SHARED_DEFAULTS}.items()},
    }
    for quota_class, values in defaults.items():
        lowest[quota_class] = min(values)
    for (_, _, quota_class), value in overrides.items():
        lowest[quota_class] = min(value, lowest.get(quota_class, value))
    lowest[SYMMETRIC] = min(lowest[SYMMETRIC], lowest.get(CUSTOM_KEY_STORE, lowest[SYMMETRIC]))
    return {name: 60 * QUOTA_CANDIDATE_SHARE * value for name, value in lowest.items()}


def is_quota_candidate(quota_class: str, calls: int, throttled: int, floors: dict[str, float]) -> bool:
    return throttled > 0 or calls >= floors.get(quota_class, 0.0)


# -- PostgreSQL: part of the batch's one statement ------------------------------------------------


def pg_ctes(inserted: str, stage: str, minutes: str, floors: dict[str, float]) -> list[str]:
    """The CTEs that write a batch's candidates: `inserted` names the inserted events (with the
    summaries' dimension names, id, principal_type and caller_account_id), `stage` the staged rows
    (alert_detail by block slot), `minutes` the quota summary's upsert returning its new totals ('' without one)."""
    names = ", ".join(f"'{name}'" for name in CALL_OPERATIONS)
    group_by = ", ".join(("hour", *GROUP_COLUMNS))
    floor_json = json.dumps(floors).replace("'", "''")
    ctes = [
        f"""candidate_groups AS (
            INSERT INTO {_TABLE} ({_COLUMNS})
            SELECT 'group', {group_by}, count(*), min(event_time), max(event_time), NULL, '', '', '', ''
            FROM {inserted} WHERE NOT own GROUP BY {group_by}
            RETURNING 1
        )""",
        f"""candidate_calls AS (
            INSERT INTO {_TABLE} ({_COLUMNS})
            SELECT 'call', i.event_time, {", ".join(f"i.{c}" for c in GROUP_COLUMNS)}, 1, i.event_time,
                i.event_time, i.id, i.operation, i.service, coalesce(s.alert_detail, ''), ''
            FROM {inserted} i LEFT JOIN {stage} s
                ON s.alert_detail IS NOT NULL AND s.raw_block_id = i.raw_block_id AND s.raw_index = i.raw_index
            WHERE NOT i.own AND i.error_code = '' AND i.operation IN ({names})
            ORDER BY i.id
            RETURNING 1
        )""",
        f"""candidate_minutes AS (
            INSERT INTO {_TABLE} ({_COLUMNS})
            SELECT 'minute', q.minute, q.account_id, q.region, '', '', '', '', '', false, q.calls, q.first_seen,
                q.last_seen, NULL, '', '', '', q.quota_class
            FROM {minutes} q
            WHERE (q.throttled > 0 OR q.calls >= coalesce(('{floor_json}'::jsonb ->> q.quota_class)::float8, 0))
                AND EXISTS (
                    SELECT 1 FROM {inserted} i WHERE NOT i.own AND i.minute = q.minute
                    AND i.account_id = q.account_id AND i.region = q.region AND i.quota_class = q.quota_class
                )
            RETURNING 1
        )""",
    ]
    # Without the quota summary (a benchmark's leaner write path) there are no quota minutes.
    return ctes if minutes else ctes[:2]


# -- Python: SQLite, and events ingested before candidates existed ---------------------------------


def _hour(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def build(
    events: Sequence[tuple[int, EventLike, str]],
    minute_totals: Iterable[tuple[datetime, str, str, str, int, int, datetime, datetime]],
    floors: dict[str, float],
) -> list[AlertCandidate]:
    """The candidates of `events` ((id, event, detail) of each new event), with the quota summary's
    totals after them ((minute, account, region, class, calls, throttled, first, last) of the minutes
    they touched): the rows `pg_ctes` writes."""
    groups: dict[tuple, list[Any]] = {}
    calls = []
    touched = set()
    for pk, event, detail in sorted(events, key=lambda row: row[0]):
        if event.own:
            continue
        dims = (
            _hour(event.event_time),
            event.recipient_account_id,
            event.region,
            event.key,
            event.principal,
            event.principal_type,
            event.caller_account_id,
            event.error_code,
            bool(event.after_hours),
        )
        group = groups.get(dims)
        if group is None:
            groups[dims] = [1, event.event_time, event.event_time]
        else:
            group[0] += 1
            group[1] = min(group[1], event.event_time)
            group[2] = max(group[2], event.event_time)
        if event.quota_class:
            minute = event.event_time.astimezone(UTC).replace(second=0, microsecond=0)
            touched.add((minute, event.recipient_account_id, event.region, event.quota_class))
        if event.event_name in CRITICAL_EVENT_NAMES and not event.error_code:
            calls.append(
                AlertCandidate(
                    kind=AlertCandidate.Kind.CALL,
                    at=event.event_time,
                    **dict(zip(GROUP_COLUMNS, dims[1:], strict=True)),
                    n=1,
                    first_seen=event.event_time,
                    last_seen=event.event_time,
                    event_pk=pk,
                    event_name=event.event_name,
                    service=event.service,
                    detail=detail,
                )
            )
    out = [
        AlertCandidate(
            kind=AlertCandidate.Kind.GROUP,
            at=dims[0],
            **dict(zip(GROUP_COLUMNS, dims[1:], strict=True)),
            n=n,
            first_seen=first,
            last_seen=last,
        )
        for dims, (n, first, last) in groups.items()
    ]
    out += calls
    for minute, account, region, quota_class, total, throttled, first, last in minute_totals:
        if (minute.astimezone(UTC), account, region, quota_class) not in touched:
            continue
        if is_quota_candidate(quota_class, total, throttled, floors):
            out.append(
                AlertCandidate(
                    kind=AlertCandidate.Kind.MINUTE,
                    at=minute,
                    account_id=account,
                    region=region,
                    n=total,
                    first_seen=first,
                    last_seen=last,
                    quota_class=quota_class,
                )
            )
    return out
