from django.contrib import admin

from .models import CostRecord, CostRun


class ReadOnlyAdmin(admin.ModelAdmin):
    """Written only by Cost Explorer runs; the admin is for looking."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CostRecord)
class CostRecordAdmin(ReadOnlyAdmin):
    list_display = ("day", "account_id", "usage_type", "usage_class", "region", "amount", "unit", "estimated")
    list_filter = ("usage_class", "estimated", "metric")
    search_fields = ("account_id", "usage_type")
    date_hierarchy = "day"


@admin.register(CostRun)
class CostRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "status",
        "window_start",
        "window_end",
        "requests",
        "pages",
        "restarts",
        "rows",
        "via",
    )
    list_filter = ("status", "via")
