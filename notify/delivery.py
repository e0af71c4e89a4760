"""The delivery pass: the same code for the Celery task and `manage.py deliver_alerts`.

The database is the queue. A pass claims due notifications with SELECT ... FOR UPDATE SKIP
LOCKED and a lease (`leased_until`), so any number of workers can run passes at once without
sending one notification twice at the same time; a worker killed mid-attempt leaves its lease to
expire and the notification to the next pass (at least once: the receiver deduplicates by the
delivery id). Each attempt is written to the ledger before it starts.

Channels never wait for each other: each claimed channel's notifications go one after another in
a thread of their own, all database writes stay in the calling thread, every attempt is bounded by
KMSDASH_ALERT_DELIVERY_TIMEOUT, and the first failure of a channel ends that channel's share of
the pass (its other notifications are released untouched for the next pass): a channel that is
down costs one timeout per pass. Each notification gets at most one attempt per pass.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from kmsdash import totals

from .channels import Job, Outcome, send
from .models import DeliveryAttempt, Notification

log = logging.getLogger(__name__)

CLAIM_BATCH = 200
MAX_PARALLEL_CHANNELS = 32
# A pass starts no new attempt after this long (the rest waits for the next pass, a minute later),
# so passes stay short and never run into the task time limit behind one slow channel.
PASS_SECONDS = 50


@dataclass
class PassResult:
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    released: int = 0


def retry_delay(attempt: int, rng: random.Random | None = None) -> timedelta:
    """After the `attempt`-th failure: first delay x 2^(attempt-1), capped, with "equal jitter"
    (between half and all of it) so that retries of one outage do not all land together."""
    base = min(
        settings.KMSDASH_ALERT_RETRY_MAX_SECONDS, settings.KMSDASH_ALERT_RETRY_FIRST_SECONDS * 2 ** (attempt - 1)
    )
    return timedelta(seconds=base * (rng or random).uniform(0.5, 1.0))


def deadline(notification: Notification) -> datetime:
    return notification.created_at + timedelta(hours=settings.KMSDASH_ALERT_DELIVERY_HOURS)


def lease() -> timedelta:
    return timedelta(seconds=settings.KMSDASH_ALERT_DELIVERY_LEASE_SECONDS)


def due(now: datetime, *, ignore_backoff: bool = False):
    """Pending and not held by a live worker; and, unless ignore_backoff, whose retry time has come."""
    pending = Notification.objects.filter(state=Notification.State.PENDING).filter(
        Q(leased_until__isnull=True) | Q(leased_until__lte=now)
    )
    return pending if ignore_backoff else pending.filter(next_attempt_at__lte=now)


def claim(now: datetime, *, ignore_backoff: bool = False, limit: int = CLAIM_BATCH) -> list[Notification]:
    with transaction.atomic():
        ids = list(
            due(now, ignore_backoff=ignore_backoff)
            .select_for_update(skip_locked=True)
            .order_by("next_attempt_at", "created_at")
            .values_list("id", flat=True)[:limit]
        )
        Notification.objects.filter(id__in=ids).update(leased_until=now + lease())
    return list(Notification.objects.filter(id__in=ids).select_related("channel").order_by("created_at"))


def _begin(notification: Notification) -> DeliveryAttempt | None:
    """Count the attempt and renew the lease, if the notification is still ours; then ledger it."""
    now = timezone.now()
    number = notification.attempts + 1
    taken = Notification.objects.filter(
        id=notification.id,
        state=Notification.State.PENDING,
        attempts=notification.attempts,
        leased_until=notification.leased_until,
    ).update(attempts=F("attempts") + 1, leased_until=now + lease())
    if not taken:
        return None  # our lease ran out and another worker took it over
    notification.attempts = number
    notification.leased_until = now + lease()
    return DeliveryAttempt.objects.create(
        notification=notification, channel_id=notification.channel_id, number=number, started_at=now
    )


def _finish(notification: Notification, attempt: DeliveryAttempt, outcome: Outcome, latency_ms: int) -> str:
    # One transaction: the attempt's outcome, the notification's new state and their totals
    # (kmsdash/totals.py) commit together. An attempt gets its outcome once (ok is null until then).
    with transaction.atomic():
        return _record(notification, attempt, outcome, latency_ms)


def _record(notification: Notification, attempt: DeliveryAttempt, outcome: Outcome, latency_ms: int) -> str:
    now = timezone.now()
    channel_type = notification.channel.type
    finished = DeliveryAttempt.objects.filter(pk=attempt.pk, ok__isnull=True).update(
        finished_at=now, ok=outcome.ok, status_code=outcome.status_code, error=outcome.error, latency_ms=latency_ms
    )
    change = {
        totals.key(
            totals.ATTEMPTS, channel_type=channel_type, outcome="succeeded" if outcome.ok else "failed"
        ): finished
    }
    mine = Notification.objects.filter(id=notification.id, attempts=attempt.number, state=Notification.State.PENDING)
    if outcome.ok:
        moved = mine.update(state=Notification.State.DELIVERED, finished_at=now, leased_until=None, last_error="")
        change[totals.key(totals.NOTIFICATIONS, channel_type=channel_type, state=Notification.State.DELIVERED)] = moved
        totals.add_many(change)
        return "delivered"
    end = deadline(notification)
    if now >= end:
        moved = mine.update(
            state=Notification.State.FAILED, finished_at=now, leased_until=None, last_error=outcome.error
        )
        change[totals.key(totals.NOTIFICATIONS, channel_type=channel_type, state=Notification.State.FAILED)] = moved
        totals.add_many(change)
        log.warning(
            "alert delivery failed for good",
            extra={
                "delivery": str(notification.id),
                "channel": notification.channel.name,
                "attempts": attempt.number,
                "error": outcome.error,
            },
        )
        return "failed"
    # The last retry falls on the deadline itself, so the window is used to its end.
    mine.update(
        next_attempt_at=min(now + retry_delay(attempt.number), end), leased_until=None, last_error=outcome.error
    )
    totals.add_many(change)
    return "retrying"


def _job(notification: Notification, secrets: dict[int, str | Exception]) -> Job | Outcome:
    channel = notification.channel
    if not channel.enabled:
        return Outcome(False, error="the channel is disabled")
    if channel.pk not in secrets:
        try:
            secrets[channel.pk] = channel.secret()
        except Exception as exc:  # KMS unreachable, or the sealed value refused: retried like a send
            secrets[channel.pk] = exc
    secret = secrets[channel.pk]
    if isinstance(secret, Exception):
        return Outcome(False, error=f"cannot read the channel's secret: {type(secret).__name__}: {secret}")
    return Job(str(notification.id), channel.type, channel.target, secret, notification.payload)


def _release(notifications: list[Notification]) -> int:
    return Notification.objects.filter(
        id__in=[n.id for n in notifications], leased_until__in=[n.leased_until for n in notifications]
    ).update(leased_until=None)


def deliver_pending(*, ignore_backoff: bool = False) -> PassResult:
    """One pass over every due notification (with ignore_backoff: every pending one)."""
    result = PassResult()
    stop_starting = time.monotonic() + PASS_SECONDS
    claimed = claim(timezone.now(), ignore_backoff=ignore_backoff)
    result.claimed = len(claimed)
    if not claimed:
        return result
    queues: dict[int, deque[Notification]] = defaultdict(deque)
    for notification in claimed:
        queues[notification.channel_id].append(notification)
    timeout = settings.KMSDASH_ALERT_DELIVERY_TIMEOUT
    secrets: dict[int, str | Exception] = {}
    running: dict[Future, tuple[Notification, DeliveryAttempt]] = {}

    def tally(state: str) -> None:
        setattr(result, state, getattr(result, state) + 1)

    def start_next(executor: ThreadPoolExecutor, channel_id: int) -> None:
        queue = queues[channel_id]
        if time.monotonic() > stop_starting:
            result.released += _release(list(queue))
            queue.clear()
        while queue:
            notification = queue.popleft()
            attempt = _begin(notification)
            if attempt is None:
                continue
            job = _job(notification, secrets)
            if isinstance(job, Outcome):
                tally(_finish(notification, attempt, job, 0))
                # The same cause (disabled, secret unreadable) holds for the channel's others.
                result.released += _release(list(queue))
                queue.clear()
                return
            running[executor.submit(send, job, timeout)] = (notification, attempt)
            return

    with ThreadPoolExecutor(max_workers=min(len(queues), MAX_PARALLEL_CHANNELS)) as executor:
        for channel_id in list(queues):
            start_next(executor, channel_id)
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                notification, attempt = running.pop(future)
                outcome, latency_ms = future.result()
                tally(_finish(notification, attempt, outcome, latency_ms))
                if outcome.ok:
                    start_next(executor, notification.channel_id)
                else:
                    queue = queues[notification.channel_id]
                    result.released += _release(list(queue))
                    queue.clear()
    return result
