"""The who-can panel and the principal page over a real analysis: IAM and a key read from the
emulator over HTTP, the analysis stored, the pages read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, User

from access import analysis, ingest
from audits.keyurls import key_access_url, principal_url
from inventory import services
from tests.inventory.support import (
    MAIN,
    REGION,
    call,
    kms_in,
    policy,
    role,
    role_arn,
    root_statement,
    session_in,
    source_for,
)
from tests.inventory.support import ingest as ingest_events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.emulator]

EC2_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)
HOSTILE = "<script>alert(1)</script>"


def document(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def analysed_world() -> str:
    iam = session_in(MAIN).client("iam", region_name=REGION)
    for name in ("reader", "idle", "writer"):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=EC2_TRUST)
    iam.put_role_policy(
        RoleName="reader",
        PolicyName="decrypt-all",
        PolicyDocument=document({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}),
    )
    via_s3 = {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com", "kms:EncryptionContext:team": HOSTILE}}
    iam.put_role_policy(
        RoleName="idle",
        PolicyName="via-s3",
        PolicyDocument=document({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*", "Condition": via_s3}),
    )
    iam.put_role_policy(
        RoleName="writer",
        PolicyName="self-edit",
        PolicyDocument=document(
            {"Effect": "Allow", "Action": "iam:PutRolePolicy", "Resource": role_arn(MAIN, "writer")}
        ),
    )
    kms = kms_in(MAIN)
    key = kms.create_key(Description="delegating")["KeyMetadata"]["Arn"]
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy(root_statement(MAIN)))
    source = source_for(MAIN)
    services.ingest_keys(source, REGION)
    ingest.ingest_iam(source)
    ingest_events(call(key, datetime.now(UTC) - timedelta(days=1), identity=role(MAIN, "reader")))
    assert analysis.analyse_account(MAIN) is not None
    return key


def analyst(client) -> None:
    user = User.objects.create_user("ana", password="x")
    user.groups.add(Group.objects.get_or_create(name="analyst")[0])
    client.force_login(user)


def decrypt_rows(page: str) -> dict[str, str]:
    """Principal ARN -> its row in the panel's Decrypt table."""
    table = page.split('data-group="Decrypt"', 1)[1].split("</table>", 1)[0]
    rows = {}
    for row in table.split("<tr")[2:]:
        for name in ("reader", "idle", "writer"):
            if f"role/{name}<" in row:
                rows[name] = row
    return rows


def test_the_panel_lists_who_can_decrypt_how_on_what_condition_and_whether_they_do(aws, client):
    key = analysed_world()
    analyst(client)

    page = client.get(key_access_url(key)).content.decode()

    rows = decrypt_rows(page)
    assert set(rows) == {"reader", "idle"}  # writer cannot decrypt today
    assert "uses it" in rows["reader"] and "conditional" not in rows["reader"]
    assert "identity-policy" in rows["reader"] and "decrypt-all" in rows["reader"]
    assert "never used" in rows["idle"] and "conditional" in rows["idle"]
    assert "kms:ViaService" in rows["idle"] and "s3.us-east-1.amazonaws.com" in rows["idle"]
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    escalations = page.split("Escalation paths", 1)[1]
    assert role_arn(MAIN, "writer") in escalations and "iam:PutRolePolicy" in escalations


def test_the_principal_page_shows_what_it_can_use_and_its_escalation_paths(aws, client):
    key = analysed_world()
    analyst(client)

    reader = client.get(principal_url(role_arn(MAIN, "reader"))).content.decode()
    writer = client.get(principal_url(role_arn(MAIN, "writer"))).content.decode()

    can = reader.split('id="can-use"', 1)[1].split("</section>", 1)[0]
    assert key in can and "kms:Decrypt" in can and "uses it" in can
    does = reader.split('id="does-use"', 1)[1].split("</section>", 1)[0]
    assert "Decrypt" in does
    escalations = writer.split('id="escalations"', 1)[1].split("</section>", 1)[0]
    assert "iam:PutRolePolicy" in escalations and "None found" not in escalations
