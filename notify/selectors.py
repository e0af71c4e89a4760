"""Reads for the health page: how alert deliveries are doing, per channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Max, Q

from .models import Channel, Notification

RECENT = timedelta(hours=24)


@dataclass(frozen=True)
class ChannelDeliveries:
    name: str
    type: str
    enabled: bool
    pending: int
    delivered: int
    failed: int
    suppressed: int
    last_delivered_at: datetime | None
    last_error: str


def delivery_health(now: datetime) -> list[ChannelDeliveries]:
    """Per channel: pending now; delivered, failed for good and suppressed in the last 24 hours."""
    since = now - RECENT
    recent = Q(notifications__finished_at__gte=since)
    channels = Channel.objects.annotate(
        n_pending=Count("notifications", filter=Q(notifications__state=Notification.State.PENDING)),
        n_delivered=Count("notifications", filter=recent & Q(notifications__state=Notification.State.DELIVERED)),
        n_failed=Count("notifications", filter=recent & Q(notifications__state=Notification.State.FAILED)),
        n_suppressed=Count("notifications", filter=recent & Q(notifications__state=Notification.State.SUPPRESSED)),
        last_delivered=Max("notifications__finished_at", filter=Q(notifications__state=Notification.State.DELIVERED)),
    ).order_by("name")
    # The newest error of each channel's undelivered notifications (a short list: pending or failed).
    errors: dict[int, str] = {}
    undelivered = Notification.objects.filter(
        state__in=[Notification.State.PENDING, Notification.State.FAILED], finished_at__isnull=True
    ) | Notification.objects.filter(state=Notification.State.FAILED, finished_at__gte=since)
    for channel_id, error in (
        undelivered.exclude(last_error="").order_by("-created_at").values_list("channel_id", "last_error")
    ):
        errors.setdefault(channel_id, error)
    return [
        ChannelDeliveries(
            c.name,
            c.type,
            c.enabled,
            c.n_pending,
            c.n_delivered,
            c.n_failed,
            c.n_suppressed,
            c.last_delivered,
            errors.get(c.pk, ""),
        )
        for c in channels
    ]


def pending_counts() -> dict[str, int]:
    """Pending notifications (the delivery queue) per channel type, for /metrics. Bounded by the
    queue, not the ledger: the notify_due index leads with the state. Final states are totals
    (kmsdash/totals.py)."""
    rows = (
        Notification.objects.filter(state=Notification.State.PENDING)
        .order_by()
        .values("channel__type")
        .annotate(n=Count("id"))
    )
    return {r["channel__type"]: r["n"] for r in rows}
