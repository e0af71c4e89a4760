"""One client-side rate limit per (account, region, API), shared by every caller in every process.

AWS's CloudTrail LookupEvents quota (2 requests/s) is per account and Region, whoever calls: the
ingestion's windows and the inventory's PutEventSelectors look-up draw on it together. A caller
claims the next turn in one short transaction (an UPDATE, so concurrent callers queue on the row's
lock on PostgreSQL and on the write lock on SQLite), then sleeps until its turn outside it.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest

from audits.models import ApiTurn

LOOKUP_EVENTS = "LookupEvents"
# Slack so that network and scheduling jitter never put three calls into one server-side second.
SLACK = 1.2


def interval(rate: float | None = None) -> float:
    """Seconds between two turns at `rate` calls per second (default: KMSDASH_LOOKUP_RATE_PER_SECOND)."""
    return SLACK / (rate or settings.KMSDASH_LOOKUP_RATE_PER_SECOND)


def claim_turn(account_id: str, region: str, api: str = LOOKUP_EVENTS, *, rate: float | None = None) -> float:
    """Claim the next turn and return when it starts (time.time() seconds); the turn after it
    starts one interval later."""
    step = interval(rate)
    scope = ApiTurn.objects.filter(account_id=account_id, region=region, api=api)
    with transaction.atomic():
        now = time.time()
        if not scope.update(next_at=Greatest(F("next_at"), Value(now)) + Value(step)):
            ApiTurn.objects.get_or_create(account_id=account_id, region=region, api=api)
            scope.update(next_at=Greatest(F("next_at"), Value(now)) + Value(step))
        next_at = scope.values_list("next_at", flat=True).get()
    return next_at - step


def wait_turn(account_id: str, region: str, api: str = LOOKUP_EVENTS, *, rate: float | None = None) -> float:
    """Block until this caller's turn to call `api` in (account_id, region); returns when it began."""
    start = claim_turn(account_id, region, api, rate=rate)
    delay = start - time.time()
    if delay > 0:
        time.sleep(delay)
    return start


def pace_lookup_events(client: Any, account_id: str, region: str) -> Any:
    """Make every HTTP attempt of `client`'s LookupEvents (retries included: before-send fires for
    each) wait for the scope's turn. Returns the client."""

    def wait(**_: Any) -> None:
        wait_turn(account_id, region, LOOKUP_EVENTS)

    # unique_id: registering twice for the same scope must not halve the rate.
    client.meta.events.register(
        "before-send.cloudtrail.LookupEvents", wait, unique_id=f"kmsdash-pacing-{account_id}-{region}"
    )
    return client
