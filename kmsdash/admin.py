from django.contrib import admin

from .models import ExportAudit


@admin.register(ExportAudit)
class ExportAuditAdmin(admin.ModelAdmin):
    list_display = ["created_at", "username", "kind", "via", "status", "rows", "sha256"]
    list_filter = ["kind", "status", "via"]
    search_fields = ["username", "sha256"]

    # An audit trail nobody can rewrite.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
