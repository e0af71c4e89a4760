"""Reads for the admin pages of the project itself: the export audit trail.

(Ingestion health lives with the data it reads: audits/selectors.py.)"""

from __future__ import annotations

from django.db.models import QuerySet

from .models import ExportAudit


def export_audits() -> QuerySet[ExportAudit]:
    return ExportAudit.objects.order_by("-created_at", "-id")
