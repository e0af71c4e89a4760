"""The key page's "Safe to delete?" panel: who may see it, what it shows, and that it stays text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from inventory import services
from inventory.models import InventoryRun
from inventory.references import SERVICES, Reference, ServiceResult
from inventory.source import KeySnapshot, RegionSnapshot
from tests.inventory.support import MAIN, REGION, call, ingest, policy, root_statement

pytestmark = pytest.mark.django_db

HOSTILE = "<img src=x onerror=alert(1)>"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:{REGION}:{MAIN}:key/{KEY_ID}"
NOW = datetime.now(UTC)


def store(*, references=(), denied: str = "") -> None:
    """A key 200 days old with a hostile grant name, and the references of every service, through
    the write paths the inventory and the reference reader use."""
    snapshot = KeySnapshot(
        metadata={
            "AWSAccountId": MAIN,
            "KeyId": KEY_ID,
            "Arn": ARN,
            "KeyManager": "CUSTOMER",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "KeyState": "Enabled",
            "Origin": "AWS_KMS",
            "CreationDate": NOW - timedelta(days=200),
        },
        policy=policy(root_statement(MAIN)),
        grants=[{"GrantId": "g-1", "Name": HOSTILE, "GranteePrincipal": "arn:aws:iam::111122223333:role/app"}],
    )
    aliases = [
        {"AliasName": "alias/ledger", "AliasArn": f"arn:aws:kms:{REGION}:{MAIN}:alias/ledger", "TargetKeyId": KEY_ID}
    ]
    services.store_snapshot(RegionSnapshot(MAIN, REGION, [snapshot], aliases, []), InventoryRun.objects.create())
    results = [
        ServiceResult(s, checked=False, reason=f"AccessDenied: {HOSTILE}")
        if s == denied
        else ServiceResult(s, references=[r for r in references if s == "s3"])
        for s in SERVICES
    ]
    services.store_references(MAIN, REGION, results)
    ingest(call(f"arn:aws:kms:{REGION}:{MAIN}:key/other", NOW - timedelta(days=120)))  # data held: 120 days


def login(client, role_name: str | None) -> None:
    user = User.objects.create_user(f"user-{role_name}", password="x")
    if role_name:
        user.groups.add(Group.objects.get_or_create(name=role_name)[0])
    client.force_login(user)


def panel(client) -> str:
    response = client.get(reverse("inventory:key_panel", args=[ARN]))
    assert response.status_code == 200
    return response.content.decode().split('id="safe-to-delete"')[1].split("</section>")[0]


@pytest.mark.parametrize("role_name,status", [("analyst", 200), ("admin", 200), ("finance", 403), (None, 403)])
def test_the_panel_is_for_analysts_and_admins(client, role_name, status):
    store()
    login(client, role_name)
    response = client.get(reverse("inventory:key_panel", args=[ARN]))
    assert response.status_code == status
    assert (b"Safe to delete?" in response.content) == (status == 200)


def test_anonymous_visitors_are_sent_to_log_in(client):
    store()
    response = client.get(reverse("inventory:key_panel", args=[ARN]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_an_unused_unreferenced_key_shows_safe_to_schedule_with_its_saving(client):
    store()
    login(client, "analyst")
    html = panel(client)
    assert "safe-to-schedule" in html and "$1.00" in html and "alias/ledger" in html
    assert "none found" in html and "Not checked" not in html


def test_a_referencing_bucket_and_a_denied_service_are_shown_and_escaped(client):
    bucket = Reference("s3-bucket-default-encryption", f"arn:aws:s3:::reports-{HOSTILE}", ARN)
    store(references=[bucket], denied="sqs")
    login(client, "analyst")
    html = panel(client)
    assert "no-recent-use" in html
    assert "Not checked" in html and "sqs" in html
    assert HOSTILE not in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") == 3  # the bucket, the reason, the grant
