from __future__ import annotations

from datetime import date, timedelta

from django import forms

from .charts import BY_CHOICES
from .selectors import month_start
from .services import utc_today

MAX_DAYS = 400  # Cost Explorer keeps 13 months and the current one


class PeriodForm(forms.Form):
    """The page's and the export's period: UTC days, both included."""

    since = forms.DateField(required=False)
    until = forms.DateField(required=False)
    by = forms.ChoiceField(choices=list(BY_CHOICES.items()), required=False)

    def clean(self):
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        today = utc_today()
        until = data.get("until") or today
        since = data.get("since") or month_start(month_start(until) - timedelta(days=1))
        if since > until:
            raise forms.ValidationError("The period starts after it ends.")
        if (until - since).days >= MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
        data["since"], data["until"] = since, until
        data["by"] = data.get("by") or "class"
        return data

    def period(self) -> tuple[date, date]:
        return self.cleaned_data["since"], self.cleaned_data["until"]
