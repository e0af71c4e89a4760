"""The nine detections, over the events that landed in one range of alert candidates, on event time.

Reads: what ingestion kept of the new events for them, the alert candidates of the range
(audits/candidates.py: the events per hour and dimension, the key-management calls with their
request fields, the busy quota minutes), never the new events themselves nor their raw records;
and for every baseline the hourly and daily summaries (audits/rollups.py), never the baseline's
raw events. Each query covers every key of the range at once, so the cost follows the new events,
not the history.

Baselines (KMSDASH_ALERT_BASELINE_DAYS, 14 by default) end where the judged hour begins, so the
activity judged is never part of its own baseline; a scope whose first activity in the baseline
window is less than KMSDASH_ALERT_MIN_HISTORY_DAYS (7) before the judged hour is not judged at all.
Thresholds are robust: max(min_count, ratio x median, median + mad_factor x 1.4826 x MAD), so one
past incident in the baseline moves neither the median nor the MAD much.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Max, Min, Q, Sum, Value
from django.db.models.functions import Concat

from audits.candidates import is_quota_candidate, quota_floors, request_of
from audits.changes import EXPOSING_OPERATIONS
from audits.cloudtrail import CUSTOM_KEY_STORE, GRANT_OPERATIONS, ROUTINE, critical_class
from audits.models import (
    AlertCandidate,
    KeyDay,
    KeyHour,
    KeyPrincipalDay,
    KeyPrincipalErrorHour,
    KeyPrincipalHour,
    QuotaMinute,
)
from capacity import selectors as capacity
from inventory import policy as pol
from inventory.findings import known_accounts
from inventory.models import Finding

from .models import SEVERITY_RANK, Kind, scope_hash
from .rules import Rule

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
ALIAS_OPERATIONS = ("UpdateAlias", "DeleteAlias")
SAMPLE_EVENTS = 20


def baseline_days() -> int:
    return int(settings.KMSDASH_ALERT_BASELINE_DAYS)


def min_history() -> timedelta:
    return timedelta(days=float(settings.KMSDASH_ALERT_MIN_HISTORY_DAYS))


@dataclass
class Detection:
    """What one detection says about one scope; services.apply() turns it into an alert."""

    kind: str
    severity: str
    summary: str
    account: str = ""
    region: str = ""
    key: str = ""
    principal: str = ""
    error_code: str = ""
    subject: str = ""
    first_event: datetime | None = None
    last_event: datetime | None = None
    count: int = 0  # added to the alert's count
    # Per-hour totals (ISO hour -> count) for the kinds that count whole hours: the alert's count
    # is their sum, so judging an hour again (its later events) never counts it twice.
    hours: dict[str, int] | None = None
    observed: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    finding_id: int | None = None

    @property
    def scope(self) -> str:
        return scope_hash(self.kind, self.account, self.region, self.key, self.principal, self.error_code, self.subject)

    def merge(self, other: Detection) -> None:
        """Another detection of the same scope in the same range."""
        self.count += other.count
        if other.hours:
            self.hours = {**(self.hours or {}), **other.hours}
        self.first_event = (
            min(t for t in (self.first_event, other.first_event) if t) if other.first_event else self.first_event
        )
        self.last_event = (
            max(t for t in (self.last_event, other.last_event) if t) if other.last_event else self.last_event
        )
        if SEVERITY_RANK[other.severity] > SEVERITY_RANK[self.severity]:
            self.severity = other.severity
        if other.observed is not None and (self.observed is None or other.observed > self.observed):
            self.observed, self.baseline, self.threshold = other.observed, other.baseline, other.threshold
            self.summary = other.summary
        events = self.evidence.get("events")
        if events is not None and other.evidence.get("events"):
            self.evidence["events"] = (events + other.evidence["events"])[:SAMPLE_EVENTS]


def robust_threshold(values: Sequence[float], rule: Rule) -> tuple[float, float]:
    """(median, threshold) of a baseline."""
    if not values:
        return 0.0, float(rule["min_count"])
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    threshold = max(float(rule["min_count"]), rule["ratio"] * median, median + rule["mad_factor"] * 1.4826 * mad)
    return median, threshold


def bump(severity: str, observed: float, threshold: float) -> str:
    """One level up when the observed value is ten times the threshold."""
    if threshold > 0 and observed >= 10 * threshold:
        rank = min(SEVERITY_RANK[severity] + 1, 4)
        return next(name for name, value in SEVERITY_RANK.items() if value == rank)
    return severity


def key_account(key: str, fallback: str) -> str:
    parts = key.split(":")
    return parts[4] if key.startswith("arn:") and len(parts) > 5 and parts[4] else fallback


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Group:
    """The new events of one (hour, account, region, key, principal, type, error code, after-hours)."""

    hour: datetime
    account: str
    region: str
    key: str
    principal: str
    principal_type: str
    error_code: str
    after_hours: bool
    n: int
    first: datetime
    last: datetime


@dataclass
class Call:
    """A new successful key-management call, as its alert candidate keeps it."""

    pk: int | None  # None only for a candidate made by hand
    event_time: datetime
    event_name: str
    recipient_account_id: str
    region: str
    key: str
    principal: str
    service: str
    detail: str


class Batch:
    """The alert candidates with ids in (lo, hi], and the summaries every detection needs."""

    def __init__(self, lo: int, hi: int, rules: dict[str, Rule], active_scopes: set[str] | None = None):
        self.lo, self.hi, self.rules = lo, hi, rules
        self.candidates = AlertCandidate.objects.filter(id__gt=lo, id__lte=hi)
        # The new events per hour and dimension (kmsdash's own calls, nobody's activity to alert
        # on, are left out by ingestion); the narrower reads below each filter these few rows.
        self.event_groups = self.candidates.filter(kind=AlertCandidate.Kind.GROUP)
        # Every (account, region, key, hour) with new events.
        self.key_hours = list(
            self.event_groups.values("account_id", "region", "key", "at")
            .annotate(n=Sum("n"))
            .order_by()
            .values_list("account_id", "region", "key", "at", "n")
        )
        self.total = sum(row[4] for row in self.key_hours)
        self.first_hour: datetime | None = min((row[3] for row in self.key_hours), default=None)
        self.active_scopes = active_scopes  # filled by the caller: scopes with an active alert
        self.window = timedelta(days=baseline_days())
        self._key_first: dict[tuple[str, str, str], datetime] | None = None
        self._principal_groups: list[Group] | None = None
        self._quota_minutes: dict[tuple[str, str], set[datetime]] | None = None
        self._busy_minutes: dict[tuple[str, str], set[datetime]] = defaultdict(set)

    def needs_active_scopes(self) -> bool:
        """Only after-hours-unusual and new-principal read the active scopes; both judge event groups."""
        return bool(self.key_hours)

    def principal_groups(self) -> list[Group]:
        """The range's failed, after-hours and possibly-new-principal events, per (hour, account,
        region, key, principal, type, error code, after-hours): one read for three detections."""
        if self._principal_groups is None:
            condition = Q(pk__in=[])
            if self.rules[Kind.FAILURE_BURST].enabled:
                condition |= ~Q(error_code="")
            if self.rules[Kind.AFTER_HOURS_UNUSUAL].enabled:
                condition |= Q(after_hours=True) & ~Q(principal="")
            if self.rules[Kind.NEW_PRINCIPAL].enabled:
                condition |= self._new_principal_condition(self.rules[Kind.NEW_PRINCIPAL])
            self._principal_groups = self.groups(condition, by=("principal_type", "error_code", "after_hours"))
        return self._principal_groups

    @staticmethod
    def _new_principal_condition(rule: Rule) -> Q:
        condition = ~Q(principal="") & ~Q(principal_type="AWSService")
        if not rule["own_account_roles"]:
            # A superset of the candidates, decided by _new_principal_reason: root, users, callers
            # of another account than the recipient's, keys of another account than the recipient's.
            condition &= (
                Q(principal_type__in=("Root", "IAMUser", "AWSAccount"))
                | (~Q(caller_account_id="") & ~Q(caller_account_id=F("account_id")))
                | ~Q(key__contains=Concat(Value(":"), F("account_id"), Value(":key/")))
                | Q(principal__endswith=":root")
                | Q(principal__contains=":user/")
            )
        return condition

    def groups(self, condition: Q, *, by: tuple[str, ...] = ()) -> list[Group]:
        """The range's events matching `condition`, per (hour, account, region, key, principal, *by)."""
        columns = ("at", "account_id", "region", "key", "principal", *by)
        rows = (
            self.event_groups.filter(condition)
            .values(*columns)
            .annotate(total=Sum("n"), first=Min("first_seen"), last=Max("last_seen"))
            .order_by()
            .values_list(*columns, "total", "first", "last")
        )
        width = len(columns)
        found = []
        for row in rows:
            named = dict(zip(by, row[5:width], strict=True))
            found.append(
                Group(
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    row[4],
                    named.get("principal_type", ""),
                    named.get("error_code", ""),
                    named.get("after_hours", False),
                    row[width],
                    row[width + 1],
                    row[width + 2],
                )
            )
        return found

    # -- shared reads ----------------------------------------------------------------------------

    def key_first_seen(self) -> dict[tuple[str, str, str], datetime]:
        """(account, region, key) -> its first activity within the baseline window of the earliest new hour."""
        if self._key_first is None:
            keys = {row[2] for row in self.key_hours}
            found: dict[tuple[str, str, str], datetime] = {}
            if keys:
                assert self.first_hour is not None  # there are key hours
                since = (self.first_hour - self.window - DAY).date()
                for row in (
                    KeyDay.objects.filter(key__in=keys, day__gte=since)
                    .values("account_id", "region", "key")
                    .annotate(first=Min("first_seen"))
                    .order_by()
                ):
                    found[(row["account_id"], row["region"], row["key"])] = row["first"]
            self._key_first = found
        return self._key_first

    def principal_first_seen(self, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
        """(key, principal) -> its first activity within the baseline window of the earliest new hour."""
        if not pairs:
            return {}
        assert self.first_hour is not None  # the pairs come from the range's events
        since = (self.first_hour - self.window - DAY).date()
        found: dict[tuple[str, str], datetime] = {}
        # The window's first two days first: a pair active then (most of them) has its first
        # activity there; only the others' later days are read.
        for days in ({"day__gte": since, "day__lte": since + 2 * DAY}, {"day__gt": since + 2 * DAY}):
            rest = pairs - found.keys()
            if not rest:
                break
            for key, principal, first in (
                KeyPrincipalDay.objects.filter(key__in={k for k, _ in rest}, principal__in={p for _, p in rest}, **days)
                .values("key", "principal")
                .annotate(first=Min("first_seen"))
                .order_by()
                .values_list("key", "principal", "first")
            ):
                if (key, principal) in rest:
                    found[(key, principal)] = first
        return found

    def has_history(self, first_seen: datetime | None, hour: datetime) -> bool:
        return first_seen is not None and first_seen <= hour - min_history()

    # -- the detections --------------------------------------------------------------------------

    def detect(self) -> list[Detection]:
        # Every detection runs even without event groups: a chunk may end inside a batch's
        # candidates and hold only its key-management calls or quota minutes.
        found: list[Detection] = []
        for kind, method in (
            (Kind.CRITICAL_EVENT, self.critical_and_exposed),
            (Kind.FAILURE_BURST, self.failure_burst),
            (Kind.VOLUME_SPIKE, self.volume_spike),
            (Kind.AFTER_HOURS_UNUSUAL, self.after_hours_unusual),
            (Kind.NEW_PRINCIPAL, self.new_principal),
            (Kind.QUOTA_HEADROOM, self.quota_headroom),
            (Kind.THROTTLING, self.throttling),
        ):
            if kind == Kind.CRITICAL_EVENT or self.rules[kind].enabled:
                found.extend(method())
        return found

    def critical_and_exposed(self) -> list[Detection]:
        critical, exposed = self.rules[Kind.CRITICAL_EVENT], self.rules[Kind.KEY_EXPOSED]
        operations = set(critical["operations"]) if critical.enabled else set()
        names = operations | (set(EXPOSING_OPERATIONS) if exposed.enabled else set())
        if not names:
            return []
        found: list[Detection] = []
        known: set[str] | None = None
        # Successful calls only: ingestion keeps no failed call as a candidate.
        query = self.candidates.filter(kind=AlertCandidate.Kind.CALL, event_name__in=sorted(names))
        if not critical["include_routine"]:
            # Grants that AWS services make on the caller's behalf are routine for key-exposed too:
            # their grantee is the service's choice.
            query = query.exclude(event_name__in=GRANT_OPERATIONS, service__gt="")
        events = [
            Call(*row)
            for row in query.order_by("event_pk").values_list(
                "event_pk", "at", "event_name", "account_id", "region", "key", "principal", "service", "detail"
            )
        ]
        for event in events:
            name = event.event_name
            # The request fields the detections read, kept by ingestion (no raw block is read).
            raw = request_of(event.detail) if name in ALIAS_OPERATIONS + EXPOSING_OPERATIONS else None
            sample = {"id": event.pk, "time": iso(event.event_time), "operation": name, "principal": event.principal}
            if name in operations:
                detection = self._critical(event, raw, sample, critical)
                if detection:
                    found.append(detection)
            if exposed.enabled and name in EXPOSING_OPERATIONS:
                if known is None:
                    known = known_accounts()
                found.extend(self._exposed(event, raw or {}, sample, exposed, known))
        return found

    def _critical(self, event: Call, raw: dict | None, sample: dict, rule: Rule) -> Detection | None:
        name = event.event_name
        kind_of = critical_class(name, event.service)
        if kind_of == ROUTINE and not rule["include_routine"]:
            return None
        if name in ALIAS_OPERATIONS:
            request = (raw or {}).get("requestParameters") or {}
            alias = request.get("aliasName") if isinstance(request, dict) else None
            if isinstance(alias, str) and alias.startswith("alias/aws/"):
                return None  # AWS managed aliases belong to AWS
            sample["alias"] = alias if isinstance(alias, str) else None
        severity = rule["operations"][name]
        if severity not in SEVERITY_RANK:
            severity = "high"
        return Detection(
            Kind.CRITICAL_EVENT,
            severity,
            f"{name} on {event.key or '(no key)'} by {event.principal or '(unknown principal)'}",
            account=event.recipient_account_id,
            region=event.region,
            key=event.key,
            principal=event.principal,
            subject=name,
            first_event=event.event_time,
            last_event=event.event_time,
            count=1,
            evidence={"operation": name, "class": kind_of, "principal": event.principal, "events": [sample]},
        )

    def _exposed(self, event: Call, raw: dict, sample: dict, rule: Rule, known: set[str]) -> list[Detection]:
        request = raw.get("requestParameters")
        if not isinstance(request, dict):
            request = {}
        owner = key_account(event.key, event.recipient_account_id)
        accounts = known | {owner, event.recipient_account_id}
        base: dict[str, Any] = dict(
            account=event.recipient_account_id,
            region=event.region,
            key=event.key,
            first_event=event.event_time,
            last_event=event.event_time,
            count=1,
        )
        found = []
        if event.event_name == "CreateGrant":
            grantee = request.get("granteePrincipal")
            grantee = grantee if isinstance(grantee, str) else ""
            account = pol.account_of(grantee)
            if account and account not in accounts:
                found.append(
                    Detection(
                        Kind.KEY_EXPOSED,
                        rule["foreign_account_severity"],
                        f"CreateGrant gives account {account}, which is not a configured account, use of {event.key}",
                        evidence={
                            "operation": "CreateGrant",
                            "grantee": grantee,
                            "account": account,
                            "operations": request.get("operations"),
                            "events": [sample],
                        },
                        **base,
                    )
                )
            return found
        policy = request.get("policy")
        if not isinstance(policy, str) or not policy:
            return found
        public = pol.public_statements(policy)
        foreign = pol.foreign_account_grants(policy, accounts)
        if public:
            found.append(
                Detection(
                    Kind.KEY_EXPOSED,
                    rule["public_severity"],
                    f'{event.event_name} lets any AWS principal ("*") use {event.key} without an account or '
                    "organisation condition",
                    evidence={"operation": event.event_name, "statements": [s.raw for s in public], "events": [sample]},
                    **base,
                )
            )
        elif foreign:
            found.append(
                Detection(
                    Kind.KEY_EXPOSED,
                    rule["foreign_account_severity"],
                    f"{event.event_name} lets account{'s' if len(foreign) > 1 else ''} {', '.join(sorted(foreign))}, "
                    f"not configured here, use {event.key}",
                    evidence={
                        "operation": event.event_name,
                        "accounts": sorted(foreign),
                        "statements": [s.raw for ss in foreign.values() for s in ss],
                        "events": [sample],
                    },
                    **base,
                )
            )
        return found

    def failure_burst(self) -> list[Detection]:
        rule = self.rules[Kind.FAILURE_BURST]
        # (account, region, key, principal, error, hour) -> new failures
        failed: dict[tuple[str, str, str, str, str, datetime], int] = defaultdict(int)
        for g in self.principal_groups():
            if not g.error_code:
                continue
            failed[(g.account, g.region, g.key, g.principal, g.error_code, g.hour)] += g.n
        if not failed:
            return []
        low = min(scope[5] for scope in failed)
        high = max(scope[5] for scope in failed)
        columns = (
            "account_id",
            "region",
            "key",
            "principal",
            "error_code",
            "hour",
            "failed",
            "first_seen",
            "last_seen",
        )
        series: dict[tuple, dict[datetime, int]] = defaultdict(dict)
        spans: dict[tuple, tuple[datetime, datetime]] = {}

        def read(rows) -> None:
            for row in rows.values_list(*columns):
                series[row[:5]][row[5]] = row[6]
                spans[row[:6]] = (row[7], row[8])

        # First the new hours' whole counts: only those reaching the minimum are judged further,
        # and only their scopes' baselines are read.
        read(
            KeyPrincipalErrorHour.objects.filter(
                key__in={s[2] for s in failed},
                principal__in={s[3] for s in failed},
                hour__gte=low,
                hour__lte=high,
                failed__gte=rule["min_count"],
            )
        )
        judged = [scope for scope in failed if scope[5] in series.get(scope[:5], {})]
        if not judged:
            return []
        read(
            KeyPrincipalErrorHour.objects.filter(
                key__in={s[2] for s in judged},
                principal__in={s[3] for s in judged},
                error_code__in={s[4] for s in judged},
                hour__gte=min(s[5] for s in judged) - self.window,
                hour__lte=high,
            )
        )
        first_seen = self.principal_first_seen({(s[2], s[3]) for s in judged})
        found = []
        for account, region, key, principal, error, hour in sorted(judged, key=lambda s: s[5]):
            if not self.has_history(first_seen.get((key, principal)), hour):
                continue
            history_start = max(
                first_seen[(key, principal)].replace(minute=0, second=0, microsecond=0), hour - self.window
            )
            own = series[(account, region, key, principal, error)]
            values = [own.get(h, 0) for h in _hours(history_start, hour)]
            median, threshold = robust_threshold(values, rule)
            observed = own.get(hour, 0)
            if observed <= threshold:
                continue
            found.append(
                Detection(
                    Kind.FAILURE_BURST,
                    bump(rule["severity"], observed, threshold),
                    f"{observed:,} {error} failures in one hour by {principal} on {key} "
                    f"(usually {median:g} an hour, threshold {threshold:g})",
                    account=account,
                    region=region,
                    key=key,
                    principal=principal,
                    error_code=error,
                    first_event=spans[(account, region, key, principal, error, hour)][0],
                    last_event=spans[(account, region, key, principal, error, hour)][1],
                    hours={iso(hour): observed},
                    observed=observed,
                    baseline=median,
                    threshold=threshold,
                    evidence={"baseline_hours": len(values)},
                )
            )
        return found

    def volume_spike(self) -> list[Detection]:
        rule = self.rules[Kind.VOLUME_SPIKE]
        hours = {row[:4] for row in self.key_hours}
        if not hours:
            return []
        low = min(scope[3] for scope in hours)
        high = max(scope[3] for scope in hours)
        series: dict[tuple, dict[datetime, int]] = defaultdict(dict)
        spans: dict[tuple, tuple[datetime, datetime]] = {}

        def read(rows) -> None:
            # Successful calls only: a storm of failures is failure-burst's, and one alert says it.
            for account, region, key, hour, calls, failed, first, last in rows.values_list(
                "account_id", "region", "key", "hour", "calls", "failed", "first_seen", "last_seen"
            ):
                series[(account, region, key)][hour] = calls - failed
                spans[(account, region, key, hour)] = (first, last)

        # The new hours first: only keys with an hour of at least min_count calls need a baseline.
        read(
            KeyHour.objects.filter(
                key__in={s[2] for s in hours}, hour__gte=low, hour__lte=high, calls__gte=rule["min_count"]
            )
        )
        hours = {s for s in hours if series.get(s[:3], {}).get(s[3], 0) >= rule["min_count"]}
        if not hours:
            return []
        read(
            KeyHour.objects.filter(
                key__in={s[2] for s in hours}, hour__gte=min(s[3] for s in hours) - self.window, hour__lte=high
            )
        )
        first_seen = self.key_first_seen()
        found = []
        for account, region, key, hour in sorted(hours, key=lambda s: s[3]):
            own = series[(account, region, key)]
            observed = own.get(hour, 0)
            if observed < rule["min_count"]:
                continue
            first = first_seen.get((account, region, key))
            if not self.has_history(first, hour):
                continue
            assert first is not None  # has_history is false without it
            start = first.replace(minute=0, second=0, microsecond=0)
            # The same hour of the day on each earlier day of the window that the key's history covers.
            values = [own.get(hour - d * DAY, 0) for d in range(1, baseline_days() + 1) if hour - d * DAY >= start]
            median, threshold = robust_threshold(values, rule)
            if observed <= threshold:
                continue
            found.append(
                Detection(
                    Kind.VOLUME_SPIKE,
                    bump(rule["severity"], observed, threshold),
                    f"{observed:,} successful calls to {key} in the hour from {hour:%Y-%m-%d %H:00} UTC "
                    f"(usually {median:g} at this hour, threshold {threshold:g})",
                    account=account,
                    region=region,
                    key=key,
                    first_event=spans[(account, region, key, hour)][0],
                    last_event=spans[(account, region, key, hour)][1],
                    hours={iso(hour): observed},
                    observed=observed,
                    baseline=median,
                    threshold=threshold,
                    evidence={"baseline_days": len(values)},
                )
            )
        return found

    def _fresh(
        self,
        kind: str,
        candidates: dict[tuple, list[Group]],
        previous: dict[tuple, list[datetime]],
        first_seen: dict,
        history_key,
    ) -> list[tuple[tuple, int, list[Group]]]:
        """For each (account, region, key, principal) candidate: the groups from the first new hour
        with no earlier activity of its kind in the window before it (and enough history), or all of
        them when an alert of the scope is active already."""
        out = []
        for scope, groups in candidates.items():
            groups.sort(key=lambda g: g.hour)
            if scope_hash(kind, *scope, "", "") in (self.active_scopes or set()):
                out.append((scope, 0, groups))
                continue
            seen = previous.get(scope, [])
            for i, g in enumerate(groups):
                # Activity of the scope in [hour - window, hour), new events included.
                j = bisect.bisect_left(seen, g.hour)
                if j and seen[j - 1] >= g.hour - self.window:
                    continue
                if not self.has_history(first_seen.get(history_key(scope)), g.hour):
                    continue
                out.append((scope, i, groups[i:]))
                break
        return out

    def after_hours_unusual(self) -> list[Detection]:
        rule = self.rules[Kind.AFTER_HOURS_UNUSUAL]
        candidates: dict[tuple, list[Group]] = defaultdict(list)
        for g in self.principal_groups():
            if g.after_hours and g.principal:
                candidates[(g.account, g.region, g.key, g.principal)].append(g)
        if not candidates:
            return []
        previous = self._principal_hours(candidates, after_hours=True)
        first_seen = self.principal_first_seen({(s[2], s[3]) for s in candidates})
        found = []
        for scope, _, groups in self._fresh(
            Kind.AFTER_HOURS_UNUSUAL, candidates, previous, first_seen, lambda s: (s[2], s[3])
        ):
            n = sum(g.n for g in groups)
            if n < rule["min_count"]:
                continue
            account, region, key, principal = scope
            first = min(g.first for g in groups)
            found.append(
                Detection(
                    Kind.AFTER_HOURS_UNUSUAL,
                    rule["severity"],
                    f"{principal} called {key} after hours ({n:,} calls from {first:%Y-%m-%d %H:%M} UTC), "
                    f"with no after-hours activity on it in the previous {baseline_days()} days",
                    account=account,
                    region=region,
                    key=key,
                    principal=principal,
                    first_event=first,
                    last_event=max(g.last for g in groups),
                    count=n,
                    observed=n,
                    baseline=0,
                    threshold=rule["min_count"],
                )
            )
        return found

    def new_principal(self) -> list[Detection]:
        rule = self.rules[Kind.NEW_PRINCIPAL]
        candidates: dict[tuple, list[Group]] = defaultdict(list)
        reasons: dict[tuple, tuple[str, str]] = {}
        for g in self.principal_groups():
            reason = self._new_principal_reason(g, rule)
            if reason:
                scope = (g.account, g.region, g.key, g.principal)
                candidates[scope].append(g)
                reasons[scope] = reason
        if not candidates:
            return []
        previous = self._principal_hours(candidates, after_hours=False)
        first_seen = self.key_first_seen()
        found = []
        for scope, _, groups in self._fresh(
            Kind.NEW_PRINCIPAL, candidates, previous, first_seen, lambda s: (s[0], s[1], s[2])
        ):
            account, region, key, principal = scope
            severity, why = reasons[scope]
            n = sum(g.n for g in groups)
            first = min(g.first for g in groups)
            found.append(
                Detection(
                    Kind.NEW_PRINCIPAL,
                    severity,
                    f"{principal} ({why}) used {key} for the first time in {baseline_days()} days",
                    account=account,
                    region=region,
                    key=key,
                    principal=principal,
                    first_event=first,
                    last_event=max(g.last for g in groups),
                    count=n,
                    observed=n,
                    baseline=0,
                    evidence={"reason": why, "principal_type": groups[0].principal_type},
                )
            )
        return found

    @staticmethod
    def _new_principal_reason(g: Group, rule: Rule) -> tuple[str, str] | None:
        if not g.principal or g.principal_type == "AWSService":
            return None
        owner = key_account(g.key, g.account)
        account = pol.account_of(g.principal)
        if g.principal_type == "Root" or g.principal.endswith(":root"):
            return rule["root_severity"], "root user"
        if account and account != owner:
            return rule["cross_account_severity"], f"account {account}, not the key's account {owner}"
        if g.principal_type == "IAMUser" or ":user/" in g.principal:
            return rule["iam_user_severity"], "IAM user"
        if rule["own_account_roles"]:
            return rule["own_account_role_severity"], "role of the key's account"
        return None

    # -- request quotas (capacity) ---------------------------------------------------------------

    def quota_minutes(self, *, busy: bool = False) -> dict[tuple[str, str], set[datetime]]:
        """(account, region) -> the UTC minutes with new calls that count against a request quota,
        those busy enough or throttled enough to be judged at all (audits/candidates.py); busy:
        only those busy enough for quota-headroom."""
        if self._quota_minutes is None:
            floors = quota_floors()
            found: dict[tuple[str, str], set[datetime]] = defaultdict(set)
            for account, region, minute, quota_class, calls in self.candidates.filter(
                kind=AlertCandidate.Kind.MINUTE
            ).values_list("account_id", "region", "at", "quota_class", "n"):
                found[(account, region)].add(minute.astimezone(UTC))
                if is_quota_candidate(quota_class, calls, 0, floors):
                    self._busy_minutes[(account, region)].add(minute.astimezone(UTC))
            self._quota_minutes = found
        return self._busy_minutes if busy else self._quota_minutes

    def _minute_rows(
        self, minutes_of: dict[tuple[str, str], set[datetime]], **conditions
    ) -> list[tuple[str, str, str, datetime, int, int, datetime, datetime]]:
        """QuotaMinute rows of these minutes (whole minutes: a minute's later events judge its total,
        and the alert's per-minute figures replace, never add to, what an earlier range judged)."""
        rows: list[tuple[str, str, str, datetime, int, int, datetime, datetime]] = []
        for (account, region), minutes in minutes_of.items():
            rows += QuotaMinute.objects.filter(
                account_id=account, region=region, minute__in=sorted(minutes), **conditions
            ).values_list(
                "account_id", "region", "quota_class", "minute", "calls", "throttled", "first_seen", "last_seen"
            )
        return rows

    def quota_headroom(self) -> list[Detection]:
        rule = self.rules[Kind.QUOTA_HEADROOM]
        # Minutes below a tenth of every quota that may apply cannot reach the rule's ratio of one.
        busy = self.quota_minutes(busy=True)
        rows = self._minute_rows(busy)
        rows = [row for row in rows if row[2] != CUSTOM_KEY_STORE]
        # The custom-key-store quota is read through the inventory (capacity.selectors): its minutes
        # are the custom-key-store rows plus the symmetric calls on keys in a custom key store.
        for (account, region), minutes in busy.items():
            rows += [
                (a, r, CUSTOM_KEY_STORE, m, n, t, m, m + timedelta(seconds=59))
                for a, r, m, n, t in capacity.custom_store_minutes(
                    min(minutes), max(minutes) + timedelta(minutes=1), account, region
                )
                if m in minutes
            ]
        found = []
        for account, region, quota_class, minute, calls, _, first, last in rows:
            quota = capacity.quota_for(account, region, quota_class)
            if not quota:
                continue
            rate, threshold = calls / 60, rule["ratio"] * quota
            if rate < threshold:
                continue
            found.append(
                Detection(
                    Kind.QUOTA_HEADROOM,
                    bump(rule["severity"], rate, threshold) if rate >= quota else rule["severity"],
                    f"{rate:,.1f} {quota_class} requests/s in {account} {region} in the minute from "
                    f"{minute:%Y-%m-%d %H:%M} UTC: {rate / quota:.0%} of the {quota:,.0f}/s quota",
                    account=account,
                    region=region,
                    subject=quota_class,
                    first_event=first,
                    last_event=last,
                    hours={capacity.iso_minute(minute): calls},
                    observed=round(rate, 1),
                    baseline=quota,
                    threshold=round(threshold, 1),
                    evidence={"quota_class": quota_class, "quota": quota, "minute": capacity.iso_minute(minute)},
                )
            )
        return found

    def throttling(self) -> list[Detection]:
        rule = self.rules[Kind.THROTTLING]
        per_minute: dict[tuple[str, str, datetime], list] = {}
        for account, region, _, minute, _, throttled, first, last in self._minute_rows(
            self.quota_minutes(), throttled__gt=0
        ):
            entry = per_minute.setdefault((account, region, minute), [0, first, last])
            entry[0] += throttled
            entry[1], entry[2] = min(entry[1], first), max(entry[2], last)
        found = []
        for (account, region, minute), (throttled, first, last) in sorted(per_minute.items()):
            if throttled < rule["min_count"]:
                continue
            found.append(
                Detection(
                    Kind.THROTTLING,
                    bump(rule["severity"], throttled, rule["min_count"]),
                    f"{throttled:,} calls refused with ThrottlingException in {account} {region} in the minute "
                    f"from {minute:%Y-%m-%d %H:%M} UTC",
                    account=account,
                    region=region,
                    error_code="ThrottlingException",
                    first_event=first,
                    last_event=last,
                    hours={capacity.iso_minute(minute): throttled},
                    observed=throttled,
                    threshold=rule["min_count"],
                    evidence={"minute": capacity.iso_minute(minute)},
                )
            )
        return found

    def _principal_hours(
        self, candidates: dict[tuple, list[Group]], *, after_hours: bool
    ) -> dict[tuple, list[datetime]]:
        """Sorted hours with activity (after-hours activity) of each candidate scope: its latest one
        in the window before the first new hour, and every one from there to the last new hour
        unless that latest one is within the window of every new hour of the scope (then it alone
        decides, in _fresh, that none of them is fresh: the later hours are not read)."""
        hours = [g.hour for groups in candidates.values() for g in groups]
        first, last = min(hours), max(hours)
        scope = ("account_id", "region", "key", "principal")
        found: dict[tuple, list[datetime]] = defaultdict(list)
        # The last day before the first new hour first: a scope active then (most of them) has its
        # latest earlier activity there; only the others' earlier days are read.
        recent = max(first - self.window, first - DAY)
        for span in ({"hour__gte": recent, "hour__lt": first}, {"hour__gte": first - self.window, "hour__lt": recent}):
            rest = candidates.keys() - found.keys()
            if not rest or span["hour__gte"] >= span["hour__lt"]:
                break
            before = (
                KeyPrincipalHour.objects.filter(
                    key__in={s[2] for s in rest}, principal__in={s[3] for s in rest}, **span
                )
                .filter(**({"after_hours_calls__gt": 0} if after_hours else {}))
                .values(*scope)
                .annotate(last=Max("hour"))
                .order_by()
                .values_list(*scope, "last")
            )
            for *key, hour in before:
                if tuple(key) in rest:
                    found[tuple(key)].append(hour)
        need = {
            s
            for s, groups in candidates.items()
            if s not in found or found[s][0] < max(g.hour for g in groups) - self.window
        }
        if need:
            later = KeyPrincipalHour.objects.filter(
                key__in={s[2] for s in need}, principal__in={s[3] for s in need}, hour__gte=first, hour__lte=last
            )
            if after_hours:
                later = later.filter(after_hours_calls__gt=0)
            for *key, hour in later.values_list(*scope, "hour"):
                if tuple(key) in need:
                    found[tuple(key)].append(hour)
        for seen in found.values():
            seen.sort()
        return found


def _hours(start: datetime, end: datetime) -> list[datetime]:
    """Every hour start in [start, end)."""
    count = max(math.ceil((end - start) / HOUR), 0)
    return [start + i * HOUR for i in range(count)]


def finding_detections(lo: int, hi: int, rule: Rule) -> list[Detection]:
    """New open findings (ids in (lo, hi]) at or above the rule's severity."""
    if not rule.enabled:
        return []
    floor = SEVERITY_RANK.get(rule["min_severity"], 3)
    found = []
    for finding in Finding.objects.filter(id__gt=lo, id__lte=hi).open().order_by("id"):
        if SEVERITY_RANK.get(finding.severity, 0) < floor:
            continue
        key, principal, subject = finding.key, "", finding.fingerprint
        summary = f"{finding.kind}: {finding.summary}"
        if finding.kind == Finding.Kind.NEW_PRINCIPAL:
            principal = finding.subject
        elif finding.kind == Finding.Kind.ESCALATION_PATH:
            # One alert per principal, counting the keys it could take: a role that may grant
            # itself every key is one thing to fix, not an alert per key (each key keeps its finding).
            key, principal, subject = "", finding.subject, finding.kind
            summary = f"{finding.kind}: {finding.subject} could give itself rights on keys it cannot use"
        found.append(
            Detection(
                Kind.FINDING,
                finding.severity,
                summary,
                account=finding.account_id,
                region=finding.region,
                key=key,
                principal=principal,
                subject=subject,
                first_event=finding.first_seen_at,
                last_event=finding.last_seen_at,
                count=1,
                evidence={"finding_kind": finding.kind, "finding_id": finding.pk, "finding": finding.evidence},
                finding_id=finding.pk,
            )
        )
    return found
