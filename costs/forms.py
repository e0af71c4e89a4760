from __future__ import annotations

from datetime import date, timedelta

from django import forms

from audits.filters import EARLIEST, LATEST

from .charts import BY_CHOICES
from .selectors import month_start
from .services import utc_today

MAX_DAYS = 400  # Cost Explorer keeps 13 months and the current one
# As the events filters: the pages step whole months and days around the period, which must stay
# inside the calendar Python can represent (9999-12-31 plus a day is an OverflowError, a 500).
FIRST_DAY, LAST_DAY = EARLIEST.date(), LATEST.date() - timedelta(days=1)


class PeriodForm(forms.Form):
    """The page's and the export's period: UTC days, both included."""

    since = forms.DateField(required=False)
    until = forms.DateField(required=False)
    by = forms.ChoiceField(choices=list(BY_CHOICES.items()), required=False)

    def clean(self):
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        for name in ("since", "until"):
            day = data.get(name)
            if day is not None and not FIRST_DAY <= day <= LAST_DAY:
                raise forms.ValidationError(f"{name} must be between {FIRST_DAY.year} and {LAST_DAY.year}.")
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
