"""The key panel fragment and the findings page: roles, filters, htmx, accepting, escaping."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from inventory import findings, services
from inventory.models import Finding, InventoryRun
from inventory.source import KeySnapshot, RegionSnapshot
from tests.inventory.support import MAIN, REGION, STRANGER, call, ingest, role, role_arn
from tests.support import make_user

pytestmark = pytest.mark.django_db

HOSTILE = "<img src=x onerror=alert(1)>"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:{REGION}:{MAIN}:key/{KEY_ID}"
POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Enable IAM policies",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{MAIN}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {"Sid": HOSTILE, "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"},
        ],
    }
)


def store_key(**metadata) -> None:
    """Put a key in the inventory through the service's write path (as if read from AWS)."""
    meta = {
        "AWSAccountId": MAIN,
        "KeyId": KEY_ID,
        "Arn": ARN,
        "KeyManager": "CUSTOMER",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": "Enabled",
        "Origin": "AWS_KMS",
        "Description": HOSTILE,
        "CreationDate": datetime.now(UTC) - timedelta(days=10),
        "MultiRegion": False,
        **metadata,
    }
    snapshot = KeySnapshot(
        metadata=meta,
        rotation_enabled=False,
        policy=POLICY,
        tags={"owner": HOSTILE},
        grants=[
            {
                "GrantId": "g-1",
                "Name": "vendor",
                "GranteePrincipal": role_arn(STRANGER, "vendor"),
                "Operations": ["Decrypt"],
                "Constraints": {"EncryptionContextSubset": {"k": HOSTILE}},
            }
        ],
    )
    aliases = [
        {
            "AliasName": "alias/payments",
            "AliasArn": f"arn:aws:kms:{REGION}:{MAIN}:alias/payments",
            "TargetKeyId": KEY_ID,
        }
    ]
    run = InventoryRun.objects.create(account_id=MAIN, region=REGION)
    services.store_snapshot(RegionSnapshot(MAIN, REGION, [snapshot], aliases, []), run)
    findings.recompute()


def login(client, role_name: str | None) -> User:
    user = make_user(f"user-{role_name}", *([role_name] if role_name else []))
    client.force_login(user)
    return user


@pytest.mark.parametrize("role_name,status", [("analyst", 200), ("admin", 200), ("finance", 403), (None, 403)])
def test_the_panel_and_the_findings_page_are_for_analysts_and_admins(client, role_name, status):
    store_key()
    login(client, role_name)
    assert client.get(reverse("inventory:key_panel", args=[ARN])).status_code == status
    assert client.get(reverse("inventory:findings")).status_code == status


def test_anonymous_users_are_sent_to_log_in(client):
    response = client.get(reverse("inventory:findings"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_panel_shows_inventory_who_can_and_who_does_use_the_key(client):
    store_key()
    ingest(
        call(ARN, datetime.now(UTC) - timedelta(days=1), identity=role(MAIN, "checkout")),
        call(ARN, datetime.now(UTC) - timedelta(days=1), identity=role(MAIN, "checkout")),
    )
    login(client, "analyst")
    for key in (ARN, KEY_ID, "alias/payments"):
        html = client.get(reverse("inventory:key_panel", args=[key])).content.decode()
        assert "alias/payments" in html
    # Who can: the root, "*" and the grantee. Who does: the role that called it, twice.
    can = html.split("Who can use it")[1].split("Who does use it")[0]
    assert f"arn:aws:iam::{MAIN}:root" in can and role_arn(STRANGER, "vendor") in can and ">*<" in can
    does = html.split("Who does use it")[1].split("</table>")[0]
    assert re.search(re.escape(role_arn(MAIN, "checkout")) + r"(</a>)?</td><td class=\"num\">2<", does)
    assert f'href="/principals/{role_arn(MAIN, "checkout")}/"' in does  # its principal page
    assert "Enabled" in html and "off" in html


def test_the_flagged_statement_is_highlighted_and_everything_is_escaped(client):
    store_key()
    login(client, "analyst")
    html = client.get(reverse("inventory:key_panel", args=[ARN])).content.decode()
    statements = re.findall(r'<pre class="policy-statement( flagged)?" data-statement="(\d)">', html)
    assert statements == [("", "0"), (" flagged", "1")]
    assert HOSTILE not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_an_unknown_key_gets_a_polite_fragment(client):
    login(client, "analyst")
    response = client.get(reverse("inventory:key_panel", args=["arn:aws:kms:us-east-1:111122223333:key/nope"]))
    assert response.status_code == 200 and b"not in the inventory" in response.content


def test_findings_are_filtered_by_kind_severity_and_account_and_htmx_gets_the_fragment(client):
    store_key()
    login(client, "analyst")
    page = client.get(reverse("inventory:findings")).content.decode()
    for kind in ("policy-public", "grant-cross-account", "rotation-disabled"):
        assert kind in page
    assert "<html" in page

    fragment = client.get(reverse("inventory:findings"), {"kind": "rotation-disabled"}, HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert "<html" not in body and body.strip().startswith('<div id="findings-results">')
    assert "rotation-disabled" in body and "policy-public" not in body

    critical = client.get(reverse("inventory:findings"), {"severity": "critical"}).content.decode()
    assert "policy-public" in critical.split('id="findings-results"')[1]
    assert "rotation-disabled" not in critical.split('id="findings-results"')[1]
    elsewhere = client.get(reverse("inventory:findings"), {"account": "444455556666"}).content.decode()
    assert "No finding matches." in elsewhere
    assert HOSTILE not in page


def test_an_admin_accepts_a_finding_with_a_reason_and_it_leaves_the_open_list(client):
    store_key()
    admin = login(client, "admin")
    finding = Finding.objects.get(kind="rotation-disabled")
    url = reverse("inventory:finding_accept", args=[finding.pk])
    assert client.post(url, {"reason": ""}).status_code == 400
    response = client.post(url, {"reason": "rotation handled by re-encryption job"})
    assert response.status_code == 302
    finding.refresh_from_db()
    assert finding.accepted_by == admin and finding.accepted_reason == "rotation handled by re-encryption job"
    assert finding.accepted_at is not None
    page = client.get(reverse("inventory:findings")).content.decode().split('id="findings-results"')[1]
    assert "rotation-disabled" not in page
    accepted = client.get(reverse("inventory:findings"), {"status": "accepted"}).content.decode()
    assert "rotation handled by re-encryption job" in accepted


def test_analysts_cannot_accept_and_accepting_needs_post_and_csrf(client):
    store_key()
    finding = Finding.objects.get(kind="rotation-disabled")
    url = reverse("inventory:finding_accept", args=[finding.pk])
    login(client, "analyst")
    assert client.post(url, {"reason": "x"}).status_code == 403

    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    login(csrf_client, "admin")
    assert csrf_client.get(url).status_code == 405
    assert csrf_client.post(url, {"reason": "x"}).status_code == 403
    finding.refresh_from_db()
    assert finding.accepted_at is None


def test_the_findings_command_prints_json_and_csv(capsys):
    store_key()
    from django.core.management import call_command

    call_command("findings", "--format", "json")
    data = json.loads(capsys.readouterr().out)
    kinds = sorted(f["kind"] for f in data["findings"])
    assert kinds == ["grant-cross-account", "policy-public", "rotation-disabled"]
    assert all(f["key"] == ARN and f["status"] == "open" for f in data["findings"])

    call_command("findings", "--format", "csv")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("kind,severity,key,subject")
    assert len(lines) == 4


def test_the_panel_counts_encryption_context_violations_per_principal(client):
    from inventory.models import EncryptionContextRule

    EncryptionContextRule.objects.create(name="labels", key_arn=ARN, allowed_values={"Department": ["Finance"]})
    when = datetime.now(UTC) - timedelta(days=1)
    ingest(
        call(ARN, when, identity=role(MAIN, "reporting"), encryption_context={"Department": "Finance"}),
        call(ARN, when, identity=role(MAIN, "reporting"), encryption_context={"Department": HOSTILE}),
        call(ARN, when, identity=role(MAIN, "reporting"), encryption_context={"Department": "Marketing"}),
    )
    store_key()
    login(client, "analyst")
    html = client.get(reverse("inventory:key_panel", args=[ARN])).content.decode()
    section = html.split("Encryption-context violations")[1].split("</table>")[0]
    assert role_arn(MAIN, "reporting") in section
    assert re.search(r'<td class="num">2</td><td>Department not allowed ×2</td>', section)
    assert HOSTILE not in html


def test_the_panel_links_multi_region_partners(client):
    replica = ARN.replace(REGION, "eu-west-1")
    store_key(
        KeyId=KEY_ID,
        MultiRegion=True,
        MultiRegionConfiguration={
            "MultiRegionKeyType": "PRIMARY",
            "PrimaryKey": {"Arn": ARN, "Region": REGION},
            "ReplicaKeys": [{"Arn": replica, "Region": "eu-west-1"}],
        },
    )
    login(client, "analyst")
    html = client.get(reverse("inventory:key_panel", args=[ARN])).content.decode()
    assert "primary key" in html and f"replica in eu-west-1: {replica}" in html
