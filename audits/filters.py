"""The stable URL interface for filtering KMS events.

Every page, fragment and export that shows events reads its filters through `EventFilter`, so a
bookmarked URL means the same thing everywhere:

    key, principal, service, operation, error (an error code, "any" or "none"), after_hours (1 or 0),
    account, region, since, until (ISO date or date-time, UTC), q (free text: user agent, source IP),
    own (1: include kmsdash's own calls, which every count leaves out by default)

`since` is inclusive; `until` is inclusive too: a date means the whole of that UTC day, a date-time
that instant. A value that does not validate is reported in `.errors` and makes both querysets
empty: a mistyped bookmark must never silently widen into "everything".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Q, QuerySet
from django.utils import timezone

from kmsdash.dates import parse_day, parse_utc

from .cloudtrail import ACCOUNT_RE, KEY_ID_RE, LIMITS, REGION_RE
from .models import DailyRollup, Event

PARAMS = (
    "key",
    "principal",
    "service",
    "operation",
    "error",
    "after_hours",
    "account",
    "region",
    "since",
    "until",
    "q",
    "own",
)

PERIODS = {"24h": "24 hours", "7d": "7 days", "30d": "30 days", "90d": "90 days"}
EXPLORER_PERIOD = "30d"  # as the key page's, whose links open the explorer

EXACT = ("key", "principal")
ERROR_ANY = "any"
ERROR_NONE = "none"
Q_MAX = 256
# Bounds and cursors outside these years are refused: the windows the pages derive from them (a day
# after `until`, a month before a cursor) must stay inside the calendar Python can represent.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)

_TEXT_LIMITS = {
    "key": LIMITS["key"],
    "principal": LIMITS["principal"],
    "service": LIMITS["service"],
    "operation": LIMITS["event_name"],
    "error": LIMITS["error_code"],
    "q": Q_MAX,
}


@dataclass(frozen=True)
class Bound:
    """A time bound as given: a whole UTC day (`is_date`) or an instant."""

    when: datetime  # aware, UTC
    is_date: bool

    @classmethod
    def parse(cls, text: str) -> Bound:
        text = text.strip()
        if "T" not in text and " " not in text and len(text) == 10:
            return cls(datetime.combine(parse_day(text), time(), tzinfo=UTC), True)
        return cls(parse_utc(text), False)

    @classmethod
    def of_day(cls, day: date) -> Bound:
        return cls(datetime.combine(day, time(), tzinfo=UTC), True)

    def __str__(self) -> str:
        if self.is_date:
            return self.when.date().isoformat()
        if self.when.microsecond:
            return self.when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return self.when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class EventFilter:
    key: str = ""
    principal: str = ""
    service: str = ""
    operation: str = ""
    error: str = ""
    after_hours: bool | None = None
    account: str = ""
    region: str = ""
    since: Bound | None = None
    until: Bound | None = None
    q: str = ""
    own: bool = False  # include kmsdash's own calls (audits.cloudtrail.OwnCalls)
    errors: tuple[str, ...] = field(default=(), compare=False)

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_querydict(cls, query) -> EventFilter:
        """Read the filters from request.GET (or any mapping); unknown parameters are ignored."""
        values: dict = {}
        errors: list[str] = []

        def text(name: str) -> str:
            value = query.get(name) or ""
            if not isinstance(value, str):
                return ""
            # Keys and principals are compared exactly: they are caller-chosen text, and a key
            # named " alias/x" is not alias/x. Typed values (codes, dates, search text) are trimmed.
            return value if name in EXACT else value.strip()

        for name, limit in _TEXT_LIMITS.items():
            value = text(name)
            if len(value) > limit:
                errors.append(f"{name} is longer than {limit} characters.")
            elif "\x00" in value:  # no stored text holds one, and PostgreSQL refuses it in a query
                errors.append(f"{name} must not contain a NUL character.")
            elif value:
                values[name] = value

        error = values.get("error", "")
        if error.lower() in (ERROR_ANY, ERROR_NONE):
            values["error"] = error.lower()

        after_hours = text("after_hours").lower()
        if after_hours in ("1", "true", "on", "yes"):
            values["after_hours"] = True
        elif after_hours in ("0", "false", "off", "no"):
            values["after_hours"] = False
        elif after_hours:
            errors.append("after_hours must be 1 or 0.")

        own = text("own").lower()
        if own in ("1", "true", "on", "yes"):
            values["own"] = True
        elif own and own not in ("0", "false", "off", "no"):
            errors.append("own must be 1 or 0.")

        account = text("account")
        if account and not ACCOUNT_RE.match(account):
            errors.append("account must be a 12-digit AWS account id.")
        elif account:
            values["account"] = account

        region = text("region")
        if region and not REGION_RE.match(region):
            errors.append("region must look like us-east-1.")
        elif region:
            values["region"] = region

        for name in ("since", "until"):
            value = text(name)
            if not value:
                continue
            try:
                bound = Bound.parse(value)
            except (ValueError, OverflowError):  # OverflowError: an offset that leaves the calendar
                errors.append(f"{name} must be an ISO date (2026-11-01) or date-time (2026-11-01T08:00:00Z).")
                continue
            if EARLIEST <= bound.when < LATEST:
                values[name] = bound
            else:
                errors.append(f"{name} must be between {EARLIEST.year} and {LATEST.year - 1}.")

        since, until = values.get("since"), values.get("until")
        if since and until and since.when > until.when:
            errors.append("since must not be after until.")
        return cls(**values, errors=tuple(errors))

    def replace(self, **changes) -> EventFilter:
        return dataclasses.replace(self, **changes)

    # --- time window --------------------------------------------------------------------------

    @property
    def start(self) -> datetime | None:
        """Inclusive lower bound of event_time."""
        return self.since.when if self.since else None

    @property
    def end(self) -> datetime | None:
        """Exclusive upper bound of event_time."""
        if not self.until:
            return None
        if self.until.is_date:
            return self.until.when + timedelta(days=1)
        return self.until.when + timedelta(microseconds=1)

    @property
    def first_day(self) -> date | None:
        return self.start.date() if self.start else None

    @property
    def last_day(self) -> date | None:
        return (self.end - timedelta(microseconds=1)).date() if self.end else None

    @property
    def day_granular(self) -> bool:
        """Whether rollups (whole UTC days) cover exactly the window asked for."""
        return (self.since is None or self.since.is_date) and (self.until is None or self.until.is_date)

    # --- querysets ----------------------------------------------------------------------------

    def events(self, qs: QuerySet[Event] | None = None) -> QuerySet[Event]:
        qs = Event.objects.all() if qs is None else qs
        if self.errors:
            return qs.none()
        q = self._dimensions(account="recipient_account_id", operation="event_name")
        if self.start:
            q &= Q(event_time__gte=self.start)
        if self.end:
            q &= Q(event_time__lt=self.end)
        if self.q:
            q &= Q(user_agent__icontains=self.q) | Q(source_ip__icontains=self.q)
        if not self.own:
            q &= Q(own=False)
        return qs.filter(q)

    def rollups(self, qs: QuerySet[Any] | None = None) -> QuerySet[Any]:  # DailyRollup or a summary table
        """Rollups of the filtered events, by whole UTC days.

        Rollups have no user agent or source IP: `q` does not apply to them, and a date-time
        bound widens to its whole day (see `day_granular`).
        """
        qs = DailyRollup.objects.all() if qs is None else qs
        if self.errors:
            return qs.none()
        q = self._dimensions(account="account_id", operation="operation")
        if self.first_day:
            q &= Q(day__gte=self.first_day)
        if self.last_day:
            q &= Q(day__lte=self.last_day)
        # The summaries without an `own` column leave kmsdash's own calls out already.
        if not self.own and any(f.name == "own" for f in qs.model._meta.concrete_fields):
            q &= Q(own=False)
        return qs.filter(q)

    def _dimensions(self, *, account: str, operation: str) -> Q:
        q = Q()
        if self.key:
            if KEY_ID_RE.match(self.key):
                # A bare key id: whichever account and region hold it.
                q &= Q(key__endswith=f":key/{self.key}")
            else:
                q &= Q(key=self.key)
        for name in ("principal", "service", "region"):
            value = getattr(self, name)
            if value:
                q &= Q(**{name: value})
        if self.operation:
            q &= Q(**{operation: self.operation})
        if self.account:
            q &= Q(**{account: self.account})
        if self.error == ERROR_ANY:
            q &= ~Q(error_code="")
        elif self.error == ERROR_NONE:
            q &= Q(error_code="")
        elif self.error:
            q &= Q(error_code=self.error)
        if self.after_hours is not None:
            q &= Q(after_hours=self.after_hours)
        return q

    # --- output -------------------------------------------------------------------------------

    def as_params(self) -> dict[str, str]:
        """The canonical parameters, in a fixed order, without empty values."""
        params: dict[str, str] = {}
        for name in PARAMS:
            value = getattr(self, name)
            if value is None or value == "":
                continue
            if name == "own" and not value:
                continue
            if name == "after_hours":
                value = "1" if value else "0"
            elif name == "own":
                value = "1"
            params[name] = str(value)
        return params

    def querystring(self, **extra) -> str:
        params = self.as_params()
        params.update({k: v for k, v in extra.items() if v not in (None, "")})
        return urlencode(params)


def period_window(query, default: str) -> tuple[EventFilter, str]:
    """The filters of `query`, with `period` (24h, 7d, 30d, 90d) as `since`, and the period.

    since/until apply with period=custom, or when no period is given (links from other pages).

    Day periods start at a UTC midnight, so the day rollups cover them exactly.
    """
    f = EventFilter.from_querydict(query)
    period = query.get("period", "")
    if period == "custom" or (period not in PERIODS and (f.since or f.until)):
        return f, "custom"
    if period not in PERIODS:
        period = default
    now = timezone.now().astimezone(UTC)
    if period == "24h":
        since = Bound((now - timedelta(hours=24)).replace(microsecond=0), False)
    else:
        since = Bound.of_day(now.date() - timedelta(days=int(period[:-1]) - 1))
    return f.replace(since=since, until=None), period


def explorer_window(query) -> tuple[EventFilter, str]:
    """`period_window` for lists of events (the explorer, its export): never without a start.

    Without one, a filter matching few events would read the whole event table: a custom window
    with only `until` starts as many days before it as the default period; `since=1970-01-01`
    still asks for everything, explicitly.
    """
    f, period = period_window(query, EXPLORER_PERIOD)
    if f.since is None and not f.errors:
        days = int(EXPLORER_PERIOD[:-1])
        last = f.last_day or timezone.now().astimezone(UTC).date()
        f = f.replace(since=Bound.of_day(max(last - timedelta(days=days - 1), EARLIEST.date())))
    return f, period
