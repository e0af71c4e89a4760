"""The one parser of ISO 8601 dates and date-times given as text (by a user, a file, an AWS API or
the database driver): django.utils.dateparse, with a naive date-time meaning UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime

from django.utils import dateparse


def parse_day(text: str) -> date:
    """'2026-12-02' -> that date. ValueError unless the text is an ISO date."""
    parsed = dateparse.parse_date(text)
    if parsed is None:
        raise ValueError(f"{text!r} is not an ISO date")
    return parsed


def parse_utc(text: str) -> datetime:
    """An ISO date-time (or a date: its midnight) -> aware, in UTC; naive text is taken as UTC.
    ValueError unless the text is ISO 8601."""
    parsed = dateparse.parse_datetime(text)
    if parsed is None:
        raise ValueError(f"{text!r} is not an ISO date-time")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
