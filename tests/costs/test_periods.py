"""The cost pages' period: any date a browser can send gets a page or a 400, never a 500."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import time_machine
from django.urls import reverse

from tests.support import make_user

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
EXTREMES = [
    {"until": "9999-12-31"},
    {"since": "0001-01-01"},
    {"since": "0001-01-01", "until": "0001-01-31"},
    {"since": "9999-12-01", "until": "9999-12-31"},
    {"until": "0001-01-01"},
    {"since": "1969-12-31", "until": "1970-01-30"},
]


@pytest.fixture
def finance(client):
    client.force_login(make_user("fin", "finance"))
    with time_machine.travel(NOW, tick=False):
        yield client


@pytest.mark.parametrize("query", EXTREMES)
def test_an_extreme_date_shows_the_default_period_and_says_why(finance, query):
    response = finance.get(reverse("costs:overview"), query)
    assert response.status_code == 200
    assert "Invalid period" in response.content.decode()
    assert (response.context["since"], response.context["until"]) == (date(2026, 10, 1), date(2026, 11, 20))


@pytest.mark.parametrize("query", EXTREMES)
def test_an_extreme_date_is_refused_by_the_export(finance, query):
    assert finance.post(reverse("costs:export"), query).status_code == 400


def test_the_form_names_the_years_it_accepts():
    from costs.forms import PeriodForm

    form = PeriodForm({"until": "9999-12-31"})
    assert not form.is_valid()
    assert "between 1970 and 8999" in str(form.errors)
