"""Estimated cost per key and day: what Cost Explorer cannot tell.

    key-months  customer managed keys, $1/month prorated hourly (each multi-region replica is a
                key of its own), plus $1/month for each of the first two rotations; nothing for
                AWS managed keys or keys pending deletion.
    requests    CloudTrail rollup counts x the price for the key's type; the monthly free tier
                (20,000 symmetric requests per account, all regions) is used up day by day from
                the first of the month, shared within a day in proportion to each key's requests.

Decisions, all visible in the reconciliation with Cost Explorer:
- Failed requests are counted: AWS prices KMS per request and names no exception for errors.
- A cross-account request is billed to the calling account (AWS pricing, note 2). The key
  owner's copy of it (principal = the caller's account id) is charged to the caller, and skipped
  when the caller's own trail is read too, so the request is not counted twice.
- A key missing from the inventory is taken to be a symmetric customer managed key ("assumed"),
  charged a key-month from the first day it is seen in the month.
- The inventory's current state stands for the whole period (a key pending deletion today is
  not charged for earlier days either).
"""

from __future__ import annotations

import calendar
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Case, F, Sum, Value, When
from django.db.models.functions import Length
from django.db.models.lookups import In

from audits.cloudtrail import DATA_KEY_PAIR_OPERATIONS
from audits.models import DailyRollup, Source
from inventory.models import Key

from .prices import free_tier_eligible, prices, request_price_name
from .selectors import DayCost, days_between, month_start

ZERO = Decimal(0)
KEY_ARN_RE = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):key/[A-Za-z0-9-]+$")
ACCOUNT_RE = re.compile(r"^\d{12}$")
NOT_BILLED_STATES = frozenset({"PendingDeletion", "PendingReplicaDeletion"})


@dataclass(frozen=True)
class KeyFacts:
    arn: str
    account_id: str
    region: str
    customer_managed: bool = True
    key_spec: str = "SYMMETRIC_DEFAULT"
    key_state: str = "Enabled"
    creation_date: datetime | None = None
    rotations: int = 0
    last_used_at: datetime | None = None
    assumed: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def assumed_for(cls, arn: str) -> KeyFacts | None:
        match = KEY_ARN_RE.match(arn)
        if match is None:
            return None
        return cls(arn=arn, account_id=match["account"], region=match["region"], assumed=True)

    @classmethod
    def from_key(cls, key) -> KeyFacts:
        """The facts of an inventory key (inventory.models.Key)."""
        return cls(
            arn=key.arn,
            account_id=key.account_id,
            region=key.region,
            customer_managed=key.key_manager == "CUSTOMER",
            key_spec=key.key_spec or "SYMMETRIC_DEFAULT",
            key_state=key.key_state,
            creation_date=key.creation_date,
            rotations=key.rotations or 0,
            last_used_at=getattr(key, "last_used_at", None),
            tags=key.tags if isinstance(key.tags, dict) else {},
        )

    @property
    def billed_monthly(self) -> bool:
        return self.customer_managed and self.key_state not in NOT_BILLED_STATES

    def monthly_charge(self, table: dict[str, Decimal]) -> Decimal:
        if not self.billed_monthly:
            return ZERO
        rotations = min(self.rotations, int(table["billable_rotations"]))
        return table["key_month"] + rotations * table["rotation_month"]

    def key_month_cost(self, day: date, table: dict[str, Decimal]) -> Decimal:
        """The key-month charge for one UTC day, prorated by the hours the key existed that day."""
        monthly = self.monthly_charge(table)
        if not monthly:
            return ZERO
        day_start = datetime.combine(day, time.min, tzinfo=UTC)
        day_end = day_start + timedelta(days=1)
        hours = Decimal(24)
        if self.creation_date is not None:
            if self.creation_date >= day_end:
                return ZERO
            if self.creation_date > day_start:
                hours = Decimal(int((day_end - self.creation_date).total_seconds() // 3600))
        days_in_month = calendar.monthrange(day.year, day.month)[1]
        return monthly * hours / (24 * days_in_month)


def load_key_facts() -> dict[str, KeyFacts]:
    """Key facts from the inventory; keys it does not hold yet are assumed (see the module doc)."""
    return {key.arn: KeyFacts.from_key(key) for key in Key.objects.all().iterator(chunk_size=2000)}


@dataclass
class RequestLine:
    """Requests of one (day, charged account, region, key, price)."""

    day: date
    account_id: str
    region: str
    key: str
    price_name: str
    requests: int
    gross: Decimal = ZERO
    cost: Decimal = ZERO  # after the free tier
    assumed: bool = False


@dataclass
class KeyCost:
    key: str
    account_id: str
    region: str
    key_months: Decimal = ZERO
    requests: int = 0
    request_cost: Decimal = ZERO
    assumed: bool = False
    in_inventory: bool = True

    @property
    def total(self) -> Decimal:
        return self.key_months + self.request_cost


UNTAGGED = "(untagged)"
NOT_IN_INVENTORY = "(not in the inventory)"


@dataclass
class TagCost:
    value: str
    keys: int = 0
    key_months: Decimal = ZERO
    request_cost: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return self.key_months + self.request_cost


def tag_keys(facts: dict[str, KeyFacts]) -> list[str]:
    """Tag keys present on inventory keys, the most used first."""
    counts: dict[str, int] = defaultdict(int)
    for key_facts in facts.values():
        for name in key_facts.tags:
            counts[name] += 1
    return sorted(counts, key=lambda name: (-counts[name], name))


@dataclass
class Estimate:
    start: date
    end: date
    lines: list[RequestLine] = field(default_factory=list)
    # (day, account) -> key-month charges attributed that day
    key_months: dict[tuple[date, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    keys: dict[str, KeyCost] = field(default_factory=dict)
    # "key", "principal", "service" -> {label: [requests, request cost]}
    driver_totals: dict[str, dict[str, list]] = field(default_factory=dict)

    def attributed_by_day(self) -> dict[date, Decimal]:
        totals: dict[date, Decimal] = defaultdict(Decimal)
        for (day, _account), amount in self.key_months.items():
            totals[day] += amount
        for line in self.lines:
            totals[line.day] += line.cost
        return totals

    def by_tag(self, tag_key: str, facts: dict[str, KeyFacts]) -> list[TagCost]:
        """Estimated cost per value of one key tag (cost allocation by team, cost centre...)."""
        groups: dict[str, TagCost] = {}
        for cost in self.keys.values():
            known = facts.get(cost.key)
            if known is None:
                value = NOT_IN_INVENTORY
            else:
                value = known.tags.get(tag_key, UNTAGGED)
            group = groups.setdefault(value, TagCost(value))
            group.keys += 1
            group.key_months += cost.key_months
            group.request_cost += cost.request_cost
        return sorted(groups.values(), key=lambda g: (-g.total, g.value))

    def per_key(self) -> list[KeyCost]:
        return sorted(self.keys.values(), key=lambda k: (-k.total, k.key))

    def drivers(self, by: str, limit: int = 10) -> list[tuple[str, int, Decimal]]:
        """Top (label, requests, estimated request cost) by key, principal or calling service."""
        ranked = sorted(self.driver_totals[by].items(), key=lambda item: (-item[1][1], -item[1][0], item[0]))
        return [(label, n, cost) for label, (n, cost) in ranked[:limit]]


# The rollups are read summed in SQL over what the figures do not need: the operation is kept only
# as the price it sets, the principal only where it may be the calling account of a cross-account
# call, and errors and hours never. The lines keep the key; the principal and service drivers come
# from a second read without it. A month of rollups gives thousands of rows instead of one per
# rollup row; every figure stays the same, as each is linear in the requests.


def _price_name(facts: dict[str, KeyFacts]) -> Case:
    """request_price_name() in SQL: by operation, then by the inventory's keys that are not symmetric.

    Keys missing from the inventory are assumed symmetric, as in estimate().
    """
    by_price: dict[str, list[str]] = defaultdict(list)
    for arn, key_facts in facts.items():
        name = request_price_name(key_facts.key_spec, "")
        if name != "symmetric":
            by_price[name].append(arn)
    return Case(
        When(operation__in=sorted(DATA_KEY_PAIR_OPERATIONS), then=Value(request_price_name("", "GenerateDataKeyPair"))),
        *(When(key__in=arns, then=Value(name)) for name, arns in sorted(by_price.items())),
        default=Value(request_price_name("", "")),
    )


# The principal where it may be an account id (12 digits, or 13 with the newline that ACCOUNT_RE's
# `$` lets through), else '': ACCOUNT_RE decides in Python, exactly as it always did.
_CALLER = Case(When(In(Length("principal"), [12, 13]), then=F("principal")), default=Value(""))


def _rollup_sums(start: date, end: date, facts: dict[str, KeyFacts], *dims: str):
    """(day, account, *dims, price name, caller, requests) summed over the rollups of start .. end.

    kmsdash's own calls are included: AWS bills them like any other request."""
    return (
        DailyRollup.objects.filter(day__gte=start, day__lte=end)
        .annotate(price_name=_price_name(facts), caller=_CALLER)
        .values_list("day", "account_id", *dims, "price_name", "caller")
        .annotate(requests=Sum("count"))
        .order_by()
    )


def _charged_account(account: str, caller: str, watched: set[str]) -> str | None:
    """The account a request is billed to; None for a copy counted where the caller's trail is read."""
    if caller != account and ACCOUNT_RE.match(caller):
        # The key owner's copy of a cross-account call: billed to the caller.
        return None if caller in watched else caller
    return account


def estimate(start: date, end: date, *, facts: dict[str, KeyFacts] | None = None) -> Estimate:
    """Attribute KMS spend to keys for the UTC days start .. end (both included)."""
    table = prices()
    facts = load_key_facts() if facts is None else facts
    result = Estimate(start, end)
    # The free tier is monthly: count from the first of start's month even if the page starts later.
    first = month_start(start)
    groups = sorted(_rollup_sums(first, end, facts, "region", "key"), key=lambda group: group[0])
    watched = set(Source.objects.values_list("account_id", flat=True)) | {g[1] for g in groups}

    first_seen: dict[str, date] = {}
    lines: list[RequestLine] = []
    for day, account, region, key, price_name, caller, requests in groups:
        account = _charged_account(account, caller, watched)
        if account is None:
            continue
        known = facts.get(key)
        if known is None and KEY_ARN_RE.match(key):  # assumed, charged a key-month from its first day
            first_seen.setdefault(key, day)
        gross = table[price_name] * requests
        lines.append(RequestLine(day, account, region, key, price_name, requests, gross, gross, known is None))

    shares = _apply_free_tier(lines, table["free_requests_per_month"])
    result.lines = [line for line in lines if line.day >= start]

    keys: dict[str, list] = defaultdict(lambda: [0, ZERO])
    for line in result.lines:
        cost = _key_cost(result, facts, line.key)
        cost.requests += line.requests
        cost.request_cost += line.cost
        keys[line.key][0] += line.requests
        keys[line.key][1] += line.cost
    result.driver_totals["key"] = keys
    result.driver_totals.update(_principal_and_service_totals(start, end, facts, watched, shares, table))

    billed = [f for f in facts.values() if f.billed_monthly]
    billed += [f for arn, day in first_seen.items() if (f := KeyFacts.assumed_for(arn)) is not None]
    for key_facts in billed:
        for day in days_between(start, end):
            if key_facts.assumed and day < first_seen[key_facts.arn]:
                continue
            amount = key_facts.key_month_cost(day, table)
            if amount:
                result.key_months[(day, key_facts.account_id)] += amount
                _key_cost(result, facts, key_facts.arn).key_months += amount
    return result


def _key_cost(result: Estimate, facts: dict[str, KeyFacts], key: str) -> KeyCost:
    cost = result.keys.get(key)
    if cost is None:
        known = facts.get(key)
        match = KEY_ARN_RE.match(key)
        cost = KeyCost(
            key=key,
            account_id=known.account_id if known else (match["account"] if match else ""),
            region=known.region if known else (match["region"] if match else ""),
            assumed=known is None,
            in_inventory=known is not None,
        )
        result.keys[key] = cost
    return cost


def _principal_and_service_totals(
    start: date,
    end: date,
    facts: dict[str, KeyFacts],
    watched: set[str],
    shares: dict[tuple[str, date], Decimal],
    table: dict[str, Decimal],
) -> dict[str, dict[str, list]]:
    """{"principal"|"service": {label: [requests, request cost]}}, priced like the lines of the same
    day, from one read of the rollups (a principal mostly calls through one service)."""
    totals: dict[str, dict[str, list]] = {by: defaultdict(lambda: [0, ZERO]) for by in ("principal", "service")}
    for day, account, principal, service, price_name, caller, requests in _rollup_sums(
        start, end, facts, "principal", "service"
    ):
        account = _charged_account(account, caller, watched)
        if account is None:
            continue
        cost = table[price_name] * requests
        if free_tier_eligible(price_name) and (account, day) in shares:
            cost = cost * (1 - shares[(account, day)])
        for by, label in (("principal", principal), ("service", service)):
            totals[by][label][0] += requests
            totals[by][label][1] += cost
    return totals


def _apply_free_tier(lines: list[RequestLine], allowance: Decimal) -> dict[tuple[str, date], Decimal]:
    """Spend each account's monthly free requests day by day, shared within a day pro rata.

    Returns the share of the eligible requests that was free, by (account, day) when some was.
    """
    by_day: dict[tuple[str, date, date], list[RequestLine]] = defaultdict(list)
    for line in lines:
        if free_tier_eligible(line.price_name):
            by_day[(line.account_id, month_start(line.day), line.day)].append(line)
    left: dict[tuple[str, date], Decimal] = defaultdict(lambda: allowance)
    shares: dict[tuple[str, date], Decimal] = {}
    for (account, month, day), day_lines in sorted(by_day.items()):
        eligible = sum(line.requests for line in day_lines)
        free = min(left[(account, month)], Decimal(eligible))
        if not eligible or not free:
            continue
        left[(account, month)] -= free
        share = shares[(account, day)] = free / eligible
        for line in day_lines:
            line.cost = line.gross * (1 - share)
    return shares


@dataclass
class ReconciledDay:
    day: date
    actual: Decimal
    attributed: Decimal
    estimated: bool
    has_actual: bool

    @property
    def unattributed(self) -> Decimal:
        return self.actual - self.attributed


@dataclass
class Reconciliation:
    days: list[ReconciledDay]

    @property
    def actual(self) -> Decimal:
        return sum((d.actual for d in self.days if d.has_actual), ZERO)

    @property
    def attributed(self) -> Decimal:
        return sum((d.attributed for d in self.days if d.has_actual), ZERO)

    @property
    def unattributed(self) -> Decimal:
        return self.actual - self.attributed

    @property
    def attributed_share(self) -> Decimal | None:
        """Attributed as a percentage of actual, over the days Cost Explorer has figures for."""
        return self.attributed / self.actual * 100 if self.actual else None


@dataclass
class ReconciledAccount:
    account_id: str
    actual: Decimal
    attributed: Decimal

    @property
    def unattributed(self) -> Decimal:
        return self.actual - self.attributed


def reconcile_accounts(result: Estimate, actual_days: list[DayCost]) -> list[ReconciledAccount]:
    """Per account, over the days Cost Explorer has figures for: actual versus attributed."""
    covered = {d.day for d in actual_days if d.has_data}
    actual: dict[str, Decimal] = defaultdict(Decimal)
    attributed: dict[str, Decimal] = defaultdict(Decimal)
    for day_cost in actual_days:
        for account, amount in day_cost.by_account.items():
            actual[account] += amount
    for (day, account), amount in result.key_months.items():
        if day in covered:
            attributed[account] += amount
    for line in result.lines:
        if line.day in covered:
            attributed[line.account_id] += line.cost
    accounts = sorted(set(actual) | set(attributed))
    return [ReconciledAccount(a, actual[a], attributed[a]) for a in accounts]


def reconcile(result: Estimate, actual_days: list[DayCost]) -> Reconciliation:
    attributed = result.attributed_by_day()
    return Reconciliation(
        [ReconciledDay(d.day, d.total, attributed.get(d.day, ZERO), d.estimated, d.has_data) for d in actual_days]
    )
