"""The critical page and the critical-event alerts sort the same events into the same classes
(issue #17: "the same classes drive the alerts' critical-event defaults, so the page and the
alerts agree"): what the page hides as routine does not alert, what it shows alerts, each with the
class the page shows it under."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.urls import reverse

from alerts.models import Alert, AlertRule, Kind
from alerts.rules import DEFAULTS
from audits import synthetic
from audits.cloudtrail import CRITICAL_EVENT_NAMES, GRANT_OPERATIONS
from audits.models import Event
from tests.alerts.support import FOREIGN, K1, A, T, ingest, rec, role
from tests.support import make_user

pytestmark = pytest.mark.django_db

SERVICE = "ec2.amazonaws.com"


def request_for(name: str) -> dict:
    if name in ("CreateAlias", "UpdateAlias", "DeleteAlias"):
        return {"aliasName": "alias/payments", "targetKeyId": K1}
    if name == "CreateGrant":
        return {"keyId": K1, "granteePrincipal": f"arn:aws:iam::{A}:role/app", "operations": ["Decrypt"]}
    return {"keyId": K1}


def records() -> list[dict]:
    out = []
    # Every critical operation once by a person (each its own principal, so each its own alert).
    for n, name in enumerate(sorted(CRITICAL_EVENT_NAMES)):
        out.append(
            rec(name, when=T + timedelta(minutes=n), identity=role(f"person-{n}"), request_parameters=request_for(name))
        )
    # The grants an AWS service makes or retires on the caller's behalf: routine.
    for n, name in enumerate(GRANT_OPERATIONS):
        out.append(
            rec(
                name,
                when=T + timedelta(minutes=30 + n),
                identity=synthetic.identity_role(A, "autoscaling", "s", invoked_by=SERVICE),
                request_parameters={"keyId": K1, "granteePrincipal": SERVICE, "operations": ["Decrypt"]},
            )
        )
    # A person's grant to another account: access-changing, never routine, though it is a grant.
    out.append(
        rec(
            "CreateGrant",
            when=T + timedelta(minutes=40),
            identity=synthetic.identity_user(A, "jane"),
            request_parameters={
                "keyId": K1,
                "granteePrincipal": f"arn:aws:iam::{FOREIGN}:role/outside",
                "operations": ["Decrypt"],
            },
        )
    )
    return out


def page_classes(client, routine: bool) -> dict[int, str]:
    params = {
        "period": "custom",
        "since": (T - timedelta(hours=1)).isoformat(),
        "until": (T + timedelta(hours=2)).isoformat(),
    }
    if routine:
        params["routine"] = "1"
    rows = client.get(reverse("audits:critical"), params).context["rows"]
    return {e.pk: cls for e, cls, _ in rows}


def alert_classes() -> dict[int, str]:
    found = {}
    for alert in Alert.objects.filter(kind=Kind.CRITICAL_EVENT):
        for sample in alert.evidence["events"]:
            found[sample["id"]] = alert.evidence["class"]
    return found


@pytest.mark.parametrize("include_routine", [False, True], ids=["by-default", "routine-included"])
def test_the_critical_page_and_the_critical_event_alerts_put_each_event_in_the_same_class(
    client, notified, include_routine
):
    # Every critical operation in the alert set, so that the only difference left is the class.
    AlertRule.objects.update_or_create(
        kind=Kind.CRITICAL_EVENT,
        defaults={
            "config": {"operations": dict.fromkeys(CRITICAL_EVENT_NAMES, "high"), "include_routine": include_routine}
        },
    )
    ingest(records())
    notified.evaluate()
    client.force_login(make_user("ana", "analyst"))

    page = page_classes(client, routine=include_routine)
    alerts = alert_classes()
    assert alerts == page
    assert Event.objects.count() == len(CRITICAL_EVENT_NAMES) + len(GRANT_OPERATIONS) + 1
    assert len(page) == Event.objects.count() - (0 if include_routine else len(GRANT_OPERATIONS))
    assert Counter(page.values())["routine"] == (len(GRANT_OPERATIONS) if include_routine else 0)
    # The person's grant to another account is on both, as access-changing.
    jane = Event.objects.get(principal=f"arn:aws:iam::{A}:user/jane")
    assert page[jane.pk] == alerts[jane.pk] == "access-changing"
    routine = set(Event.objects.exclude(service="").values_list("pk", flat=True))
    assert len(routine) == len(GRANT_OPERATIONS)
    if not include_routine:
        # Hidden from the page by default and silent for the alerts, as one class.
        assert routine.isdisjoint(page) and routine.isdisjoint(alerts)
        assert client.get(reverse("audits:critical"), {"period": "custom", "since": T.date().isoformat()}).context[
            "routine_count"
        ] == len(GRANT_OPERATIONS)


def test_with_the_default_rule_every_alerted_critical_event_is_on_the_default_critical_page_in_its_class(
    client, notified
):
    AlertRule.objects.filter(kind=Kind.CRITICAL_EVENT).delete()  # the shipped defaults
    ingest(records())
    notified.evaluate()
    client.force_login(make_user("ana", "analyst"))
    page, alerts = page_classes(client, routine=False), alert_classes()
    assert alerts and set(alerts) <= set(page)
    assert all(page[pk] == cls for pk, cls in alerts.items())
    alerted = set(Event.objects.filter(pk__in=alerts).values_list("event_name", flat=True))
    assert alerted == set(DEFAULTS[Kind.CRITICAL_EVENT]["operations"])
