"""The findings page lists the worst first, the newest first within a severity; its columns sort."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from inventory.models import Finding
from tests.support import make_user

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def finding(n: int, kind: str, severity: str, *, hours_ago: int, account: str = "111122223333") -> Finding:
    when = NOW - timedelta(hours=hours_ago)
    return Finding.objects.create(
        fingerprint=f"{n:064d}",
        kind=kind,
        severity=severity,
        key=f"arn:aws:kms:us-east-1:{account}:key/{n:08d}-0000-4000-8000-000000000000",
        account_id=account,
        region="us-east-1",
        summary=f"finding {n}",
        first_seen_at=when,
        last_seen_at=when,
    )


@pytest.fixture
def mixed():
    K = Finding.Kind
    return {
        "old_low": finding(1, K.UNUSED_KEY, "low", hours_ago=50),
        "new_medium": finding(2, K.NEW_PRINCIPAL, "medium", hours_ago=1),
        "old_critical": finding(3, K.POLICY_PUBLIC, "critical", hours_ago=40),
        "new_critical": finding(4, K.POLICY_WILDCARD_ACTIONS, "critical", hours_ago=2, account="444455556666"),
        "high": finding(5, K.ROTATION_DISABLED, "high", hours_ago=3),
        "info": finding(6, K.ENCRYPTION_CONTEXT_VIOLATION, "info", hours_ago=0),
    }


def order(client, **params) -> list[int]:
    return [f.pk for f in client.get(reverse("inventory:findings"), params).context["findings"]]


def test_findings_start_with_the_most_severe_and_the_newest_within_a_severity(client, mixed):
    client.force_login(make_user("ana", "analyst"))
    m = mixed
    expected = ["new_critical", "old_critical", "high", "new_medium", "old_low", "info"]
    assert order(client) == [m[name].pk for name in expected]
    html = client.get(reverse("inventory:findings")).content.decode()
    assert html.index("finding 4") < html.index("finding 3") < html.index("finding 5") < html.index("finding 1")


def test_a_filter_keeps_the_severity_order(client, mixed):
    client.force_login(make_user("ana", "analyst"))
    m = mixed
    assert order(client, account="111122223333") == [
        m[n].pk for n in ("old_critical", "high", "new_medium", "old_low", "info")
    ]


def test_the_columns_still_sort_and_a_second_click_reverses(client, mixed):
    client.force_login(make_user("ana", "analyst"))
    m = mixed
    by_kind = order(client, sort="kind")
    kinds = [Finding.objects.get(pk=pk).kind for pk in by_kind]
    assert kinds == sorted(kinds)
    assert (
        order(client, sort="-severity")[0] == m["info"].pk
        and order(client, sort="-severity")[-1] == m["old_critical"].pk
    )
    assert order(client, sort="first_seen")[0] == m["info"].pk  # newest first
    assert order(client, sort="-first_seen")[0] == m["old_low"].pk
    assert order(client, sort="account")[-1] == m["new_critical"].pk

    response = client.get(reverse("inventory:findings"), {"sort": "kind", "account": "111122223333"})
    urls = response.context["sort_urls"]
    assert urls["kind"] == "?account=111122223333&sort=-kind"  # the sorted column flips
    assert urls["severity"] == "?account=111122223333&sort=severity"
    html = response.content.decode()
    assert 'hx-get="?account=111122223333&amp;sort=-kind"' in html


def test_an_unknown_sort_falls_back_to_severity(client, mixed):
    client.force_login(make_user("ana", "analyst"))
    assert order(client, sort="evidence") == order(client)
    assert order(client, sort="'; DROP TABLE x") == order(client)
