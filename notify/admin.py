"""Admin: channels are configuration (admins only, as the whole admin is); what was sent is
evidence (read-only). No secret is ever shown: a channel says where its secret lives, and a new
one is typed into a write-only field and sealed on save."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from kmsdash.admin import ReadOnlyAdmin

from .models import Channel, DeliveryAttempt, Notification
from .services import SECRET_TYPES, apprise_display, seal_secret


class ChannelForm(forms.ModelForm):
    new_secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Webhook signing secret or apprise URL: sealed with KMSDASH_SECRETS_KMS_KEY on save and never "
        "shown again. Leave empty to keep the current one.",
    )

    class Meta:
        model = Channel
        fields = ["name", "type", "target", "kinds", "min_severity", "enabled", "secret_env"]

    def clean(self):
        data = super().clean()
        assert data is not None  # ModelForm.clean returns cleaned_data
        secret = data.get("new_secret")
        if secret and data.get("type") not in SECRET_TYPES:
            raise ValidationError("Only webhook and apprise channels have a secret.")
        if secret and data.get("secret_env"):
            raise ValidationError("Either an environment variable or a secret to store, not both.")
        if secret and data.get("type") == Channel.Type.APPRISE:
            if not apprise_display(secret):
                raise ValidationError("apprise does not recognise this URL.")
            data["target"] = apprise_display(secret)
        keeps_sealed = self.instance.is_sealed and self.instance.type == data.get("type")
        if data.get("type") in SECRET_TYPES and not (secret or data.get("secret_env") or keeps_sealed):
            raise ValidationError(
                "A webhook or apprise channel needs its secret: type it, or name its environment variable."
            )
        if data.get("secret_env") or data.get("type") not in SECRET_TYPES:
            self.instance.sealed_key_id, self.instance.sealed_data_key, self.instance.sealed_value = "", b"", b""
        if secret:
            # Sealed under this channel's name: the encryption context names it.
            self.instance.name = data.get("name") or self.instance.name
            try:
                seal_secret(self.instance, secret)
            except ValidationError as exc:
                raise ValidationError(exc.messages) from exc
        return data


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ["name", "type", "target", "kinds", "min_severity", "enabled", "secret_source", "updated_at"]
    list_filter = ["type", "enabled"]
    search_fields = ["name", "target"]

    def get_readonly_fields(self, request, obj=None):
        # A sealed secret is bound to the channel's name (its encryption context).
        return ["name", "secret_source"] if obj else ["secret_source"]

    @admin.display(description="secret")
    def secret_source(self, obj: Channel) -> str:
        return obj.secret_source()


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "channel", "alert_id", "event", "state", "attempts", "next_attempt_at", "finished_at"]
    list_filter = ["state", "event", "channel"]
    search_fields = ["=alert_id", "=id"]
    list_select_related = ["channel"]


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "channel", "notification", "number", "ok", "status_code", "latency_ms", "error"]
    list_filter = ["ok", "channel"]
    list_select_related = ["channel"]
