from django.contrib import admin

from kmsdash.admin import ReadOnlyAdmin

from .models import AuthorizationChange, AuthorizationSnapshot, IamRun


@admin.register(AuthorizationSnapshot)
class AuthorizationSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("account_id", "version", "first_seen_at", "last_seen_at")
    list_filter = ("account_id",)


@admin.register(AuthorizationChange)
class AuthorizationChangeAdmin(ReadOnlyAdmin):
    list_display = ("snapshot", "kind", "change", "arn")
    list_filter = ("kind", "change")
    search_fields = ("arn",)


@admin.register(IamRun)
class IamRunAdmin(ReadOnlyAdmin):
    list_display = ("account_id", "status", "started_at", "finished_at", "changes", "scps_evaluated")
    list_filter = ("status", "account_id")
