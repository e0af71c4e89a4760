"""Risk acceptance of findings: every acceptance and revocation kept as history, shown on the
findings page; a resolved finding cannot be accepted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from inventory import services
from inventory.models import Finding, FindingDecision
from tests.support import make_user

pytestmark = pytest.mark.django_db

HOSTILE = "<img src=x onerror=alert(1)>"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def login(client, username: str, role: str) -> User:
    user = make_user(username, role)
    client.force_login(user)
    return user


def finding(**fields) -> Finding:
    return Finding.objects.create(
        fingerprint=fields.pop("fingerprint", "f" * 64),
        kind=Finding.Kind.ROTATION_DISABLED,
        severity=Finding.Severity.LOW,
        key="arn:aws:kms:us-east-1:111122223333:key/k",
        account_id="111122223333",
        region="us-east-1",
        summary="Rotation is off",
        first_seen_at=NOW,
        last_seen_at=NOW,
        **fields,
    )


def post(client, f: Finding, action: str, reason: str):
    return client.post(reverse(f"inventory:finding_{action}", args=[f.pk]), {"reason": reason})


def test_accepting_again_keeps_the_first_acceptance_in_the_history(client):
    f = finding()
    first = login(client, "alice", "admin")
    assert post(client, f, "accept", "handled by the re-encryption job").status_code == 302
    second = login(client, "bob", "admin")
    assert post(client, f, "accept", "renewed for 2027").status_code == 302
    f.refresh_from_db()
    assert (f.accepted_by, f.accepted_reason) == (second, "renewed for 2027")
    history = list(f.decisions.values_list("action", "user", "username", "reason"))
    assert history == [
        ("accepted", first.pk, "alice", "handled by the re-encryption job"),
        ("accepted", second.pk, "bob", "renewed for 2027"),
    ]


def test_a_revocation_reopens_the_finding_and_is_kept_with_its_reason(client):
    f = finding()
    login(client, "alice", "admin")
    post(client, f, "accept", "temporary")
    assert post(client, f, "revoke", "the job was retired").status_code == 302
    f.refresh_from_db()
    assert f.status == "open" and f.accepted_at is None and f.accepted_by is None and f.accepted_reason == ""
    assert list(f.decisions.values_list("action", "reason")) == [
        ("accepted", "temporary"),
        ("revoked", "the job was retired"),
    ]
    assert post(client, f, "revoke", "again").status_code == 409  # nothing in force to revoke
    assert f.decisions.count() == 2


def test_every_acceptance_and_revocation_is_logged_with_the_finding_and_who(client, caplog):
    # The "logs nothing": the log is where an operator (and a SIEM) sees decisions being made.
    f = finding()
    login(client, "alice", "admin")
    with caplog.at_level("INFO", logger="inventory.services"):
        post(client, f, "accept", "temporary")
        post(client, f, "revoke", "the job was retired")
        post(client, f, "revoke", "refused: nothing in force")
    logged = [(r.getMessage(), r.finding, r.kind, r.user) for r in caplog.records if r.name == "inventory.services"]
    assert logged == [
        ("finding accepted", f.pk, f.kind, "alice"),
        ("finding revoked", f.pk, f.kind, "alice"),
    ]


def test_a_resolved_finding_cannot_be_accepted(client):
    f = finding(resolved_at=NOW)
    login(client, "alice", "admin")
    response = post(client, f, "accept", "why not")
    assert response.status_code == 409 and b"resolved" in response.content
    f.refresh_from_db()
    assert f.accepted_at is None and not f.decisions.exists()
    with pytest.raises(services.DecisionRefused):
        services.accept_finding(f, user=None, reason="from code")


def test_the_findings_page_shows_the_history_as_text(client):
    f = finding()
    login(client, "alice", "admin")
    post(client, f, "accept", HOSTILE)
    post(client, f, "revoke", "second look")
    post(client, f, "accept", "third")
    login(client, "ana", "analyst")
    page = client.get(reverse("inventory:findings"), {"status": "accepted"}).content.decode()
    assert "History (3)" in page
    history = page.split('class="decisions"')[1].split("</details>")[0]
    assert history.index("accepted") < history.index("second look") < history.index("third")
    assert "&lt;img src=x onerror=alert(1)&gt;" in history and HOSTILE not in page
    # Analysts see the history but no form to change it.
    assert "Revoke acceptance" not in page


def test_an_admin_sees_a_revoke_form_on_an_accepted_finding(client):
    f = finding()
    login(client, "alice", "admin")
    post(client, f, "accept", "ok")
    page = client.get(reverse("inventory:findings"), {"status": "accepted"}).content.decode()
    assert reverse("inventory:finding_revoke", args=[f.pk]) in page


def test_analysts_cannot_revoke(client):
    f = finding()
    services.accept_finding(f, user=None, reason="ok")
    login(client, "ana", "analyst")
    assert post(client, f, "revoke", "mine").status_code == 403
    assert client.get(reverse("inventory:finding_revoke", args=[f.pk])).status_code == 405
    assert list(FindingDecision.objects.values_list("action", flat=True)) == ["accepted"]


def test_the_migration_makes_the_acceptances_in_force_the_first_entries_of_the_history():
    import importlib

    from django.apps import apps

    migration = importlib.import_module("inventory.migrations.0002_finding_decisions")
    admin = User.objects.create_user("old-admin", password="x")
    accepted = finding(accepted_at=NOW, accepted_by=admin, accepted_reason="accepted before the history")
    finding(fingerprint="e" * 64)  # open: nothing to record
    migration.record_acceptances_in_force(apps, None)
    assert list(FindingDecision.objects.values_list("finding", "action", "username", "reason", "decided_at")) == [
        (accepted.pk, "accepted", "old-admin", "accepted before the history", NOW)
    ]
