"""Removing data that outlives a test's rollback (module-scoped fixtures, property tests)."""

from __future__ import annotations

from django.db.models import Model

from audits.models import DailyRollup, Event, IngestRun, Quarantine, RawBlock
from audits.rollups import SUMMARIES

# Every table the write path fills; the summaries come from the write path's own list, so a new one
# cannot be forgotten here (a forgotten table leaks rows into every later test of the session).
INGESTED: tuple[type[Model], ...] = (
    Event,
    RawBlock,
    DailyRollup,
    *(summary.model for summary in SUMMARIES),
    Quarantine,
    IngestRun,
)


def delete_ingested() -> None:
    for model in INGESTED:
        model._default_manager.all().delete()
