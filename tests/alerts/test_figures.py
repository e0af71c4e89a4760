"""The alert page's chart is a plotly.py figure sent as data, with attacker-chosen labels escaped."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse

from alerts.models import Alert, Kind
from audits import synthetic
from tests.alerts import support as alerts_support
from tests.support import embedded_figures as embedded
from tests.support import make_user
from tests.support import trace_names as names

pytestmark = pytest.mark.django_db

HOSTILE = '<img src=x onerror=alert(1)><a href="javascript:alert(2)">x</a>'


def test_the_alert_page_embeds_a_valid_figure(client, notified):
    client.force_login(make_user("figures-analyst", "analyst"))
    with time_machine.travel(alerts_support.T + timedelta(hours=2), tick=False):
        identity = synthetic.identity_user(alerts_support.A, HOSTILE)
        alerts_support.ingest(
            alerts_support.hourly(per_hour=2, identity=identity)
            + [
                alerts_support.rec(
                    when=alerts_support.T + timedelta(seconds=5 * i), identity=identity, error="AccessDenied"
                )
                for i in range(200)
            ]
        )
        notified.evaluate()
    alert = Alert.objects.get(kind=Kind.FAILURE_BURST)
    figures = embedded(client.get(reverse("alerts:detail", args=[alert.pk])).content.decode())
    assert names(figures["fig-alert"]) == ["Baseline (median)", "Threshold", "Failures"]
