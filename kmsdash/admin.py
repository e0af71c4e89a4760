from django.contrib import admin

from .models import ExportAudit


class ReadOnlyAdmin(admin.ModelAdmin):
    """Evidence, not configuration: viewable by staff; nobody adds, edits or deletes it here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ExportAudit)
class ExportAuditAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "username", "kind", "via", "status", "rows", "sha256"]
    list_filter = ["kind", "status", "via"]
    search_fields = ["username", "sha256"]
