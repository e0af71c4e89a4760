"""Admin: rules and suppressions are configuration (admins edit them); alerts and their history
are evidence (read-only here: analysts act on alerts through their page, which records who)."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin

from audits.cloudtrail import CRITICAL_EVENT_NAMES
from kmsdash.admin import ReadOnlyAdmin

from .models import Alert, AlertRule, AlertStateChange, Evaluation, Kind, Suppression
from .rules import DEFAULTS


class AlertRuleForm(forms.ModelForm):
    class Meta:
        model = AlertRule
        fields = ["kind", "enabled", "config"]

    def clean_config(self):
        config = self.cleaned_data["config"]
        if not isinstance(config, dict):
            raise forms.ValidationError("The configuration is a JSON object of overrides.")
        kind = self.cleaned_data.get("kind")
        allowed = set(DEFAULTS.get(kind or "", {})) | {"resolve_after_hours"}  # kind: None when invalid
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise forms.ValidationError(f"Unknown settings for {kind}: {', '.join(unknown)}.")
        operations = config.get("operations")
        if kind == Kind.CRITICAL_EVENT and isinstance(operations, dict):
            # Ingestion keeps only these calls for evaluation (audits/candidates.py).
            other = sorted(set(operations) - CRITICAL_EVENT_NAMES)
            if other:
                raise forms.ValidationError(
                    f"Not a key-management operation: {', '.join(other)} (one of {', '.join(sorted(CRITICAL_EVENT_NAMES))})."
                )
        return config


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    form = AlertRuleForm
    list_display = ["kind", "enabled", "updated_at"]
    readonly_fields = ["defaults"]

    @admin.display(description="Defaults (overridden by the configuration)")
    def defaults(self, obj):
        return json.dumps(DEFAULTS.get(obj.kind, {}), indent=2) if obj and obj.kind else ""


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    list_display = [
        "kind",
        "account_pattern",
        "key_pattern",
        "principal_pattern",
        "expires_at",
        "suppressed_count",
        "created_by",
        "created_at",
    ]
    list_filter = ["kind"]
    fields = [
        "kind",
        "account_pattern",
        "key_pattern",
        "principal_pattern",
        "reason",
        "expires_at",
        "suppressed_count",
        "last_suppressed_at",
        "created_by",
        "created_at",
    ]
    readonly_fields = ["suppressed_count", "last_suppressed_at", "created_by", "created_at"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


class AlertStateChangeInline(admin.TabularInline):
    model = AlertStateChange
    extra = 0
    can_delete = False
    readonly_fields = ["at", "user", "from_state", "to_state", "comment"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "severity", "state", "key", "principal", "count", "detected_at"]
    list_filter = ["kind", "severity", "state"]
    search_fields = ["key", "principal", "summary"]
    inlines = [AlertStateChangeInline]


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "finding_id", "evaluated_at", "last_events", "last_seconds"]
