from django.contrib import admin

from kmsdash.admin import ReadOnlyAdmin

from .models import (
    Alias,
    EncryptionContextRule,
    Finding,
    Grant,
    InventoryRun,
    Key,
    KeyStateVersion,
    PolicyVersion,
    Trail,
)


@admin.register(EncryptionContextRule)
class EncryptionContextRuleAdmin(admin.ModelAdmin):
    list_display = ("name", "key_arn", "alias_pattern", "account_id", "enabled")
    list_filter = ("enabled",)
    search_fields = ("name", "key_arn", "alias_pattern", "account_id")


@admin.register(Key)
class KeyAdmin(ReadOnlyAdmin):
    list_display = ("arn", "key_manager", "key_state", "key_spec", "rotation_enabled", "last_seen_at")
    list_filter = ("key_manager", "key_state", "account_id", "region")
    search_fields = ("arn", "key_id", "description")


@admin.register(Alias)
class AliasAdmin(ReadOnlyAdmin):
    list_display = ("name", "account_id", "region", "target_key_id")
    search_fields = ("name", "arn")


@admin.register(Finding)
class FindingAdmin(ReadOnlyAdmin):
    list_display = ("kind", "severity", "key", "subject", "first_seen_at", "resolved_at", "accepted_at")
    list_filter = ("kind", "severity")
    search_fields = ("key", "subject", "summary")


for model in (Grant, InventoryRun, KeyStateVersion, PolicyVersion, Trail):
    admin.site.register(model, ReadOnlyAdmin)
