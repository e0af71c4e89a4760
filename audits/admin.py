"""Admin: sources are configuration (editable); everything ingestion wrote is evidence (read-only)."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html

from kmsdash.admin import ReadOnlyAdmin

from .models import (
    BucketDay,
    Checkpoint,
    DailyRollup,
    Event,
    IngestRun,
    ProcessedObject,
    Quarantine,
    Retention,
    Source,
)


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ["account_id", "name", "regions", "lookup_enabled", "s3_bucket", "enabled", "updated_at"]
    list_filter = ["enabled", "lookup_enabled"]
    search_fields = ["account_id", "name", "s3_bucket"]


@admin.register(IngestRun)
class IngestRunAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "kind",
        "account_id",
        "region",
        "status",
        "files",
        "records_read",
        "events_new",
        "duplicates",
        "ignored",
        "quarantined",
        "expired",
        "duration_seconds",
    ]
    list_filter = ["kind", "status", "region"]
    search_fields = ["account_id", "error"]
    date_hierarchy = "started_at"


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["kind", "account_id", "region", "high_watermark", "updated_at"]
    list_filter = ["kind", "region"]


@admin.register(Retention)
class RetentionAdmin(ReadOnlyAdmin):
    list_display = ["purged_before", "purged_at", "events_deleted", "raw_blocks_deleted"]


@admin.register(ProcessedObject)
class ProcessedObjectAdmin(ReadOnlyAdmin):
    list_display = ["bucket", "key", "etag", "records", "processed_at"]
    search_fields = ["bucket", "key"]


@admin.register(Quarantine)
class QuarantineAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "location", "short_reason", "raw_truncated", "run"]
    search_fields = ["location", "reason"]
    list_select_related = ["run"]

    @admin.display(description="reason")
    def short_reason(self, obj: Quarantine) -> str:
        return obj.reason[:120]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = [
        "event_time",
        "event_name",
        "recipient_account_id",
        "region",
        "key",
        "principal",
        "service",
        "error_code",
        "after_hours",
    ]
    # Exact-match search only, and no list filters or date hierarchy: each of those would scan
    # the whole (large) event table. The dashboard's pages are the way to browse events.
    search_fields = ["=event_id", "=key", "=principal"]
    exclude = ["raw_block", "raw_index"]
    readonly_fields = ["raw_record"]
    show_full_result_count = False

    @admin.display(description="raw record")
    def raw_record(self, obj: Event) -> str:
        try:
            record = obj.raw_record()
            text = "(none kept)" if record is None else json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False)
        except Exception as exc:  # a damaged blob must not break the page
            text = f"(cannot decode: {type(exc).__name__})"
        # format_html escapes the text: attacker-chosen fields stay inert.
        return format_html("<pre>{}</pre>", text)


@admin.register(DailyRollup)
class DailyRollupAdmin(ReadOnlyAdmin):
    list_display = [
        "day",
        "account_id",
        "region",
        "key",
        "operation",
        "principal",
        "service",
        "error_code",
        "after_hours",
        "count",
    ]
    list_filter = ["operation", "region", "after_hours"]
    search_fields = ["=key", "=principal"]
    date_hierarchy = "day"
    show_full_result_count = False


@admin.register(BucketDay)
class BucketDayAdmin(ReadOnlyAdmin):
    list_display = ["day", "account_id", "region", "key", "s3_bucket", "count", "object_calls"]
    list_filter = ["region"]
    search_fields = ["=s3_bucket", "=key"]
    date_hierarchy = "day"
    show_full_result_count = False
