"""The access analysis end to end: IAM and keys read from the emulator over HTTP (ingest_iam and the
inventory), the analysis stored, `key_access` printing its schema, and the access findings."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from access import analysis, ingest
from inventory import findings, services
from inventory.models import Finding
from tests.inventory.support import (
    MAIN,
    REGION,
    call,
    kms_in,
    policy,
    role_arn,
    root_statement,
    session_in,
    source_for,
)
from tests.inventory.support import (
    ingest as ingest_events,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.emulator]

NOW = datetime.now(UTC)
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def document(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action, resource="*") -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def build(iam, kms) -> dict[str, str]:
    """Two keys: one delegating to IAM (with a grant), one naming a single role only."""
    for name in ("reader", "idle", "writer", "outsider", "only", "grantee"):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
    managed = iam.create_policy(PolicyName="decrypt-everything", PolicyDocument=document(allow("kms:Decrypt")))
    iam.attach_role_policy(RoleName="reader", PolicyArn=managed["Policy"]["Arn"])
    iam.put_role_policy(RoleName="idle", PolicyName="idle-decrypt", PolicyDocument=document(allow("kms:Decrypt")))
    iam.put_role_policy(
        RoleName="writer",
        PolicyName="self-edit",
        PolicyDocument=document(allow("iam:PutRolePolicy", role_arn(MAIN, "writer"))),
    )
    delegating = kms.create_key(Description="delegating")["KeyMetadata"]["Arn"]
    kms.put_key_policy(KeyId=delegating, PolicyName="default", Policy=policy(root_statement(MAIN)))
    kms.create_grant(
        KeyId=delegating, GranteePrincipal=role_arn(MAIN, "grantee"), Operations=["Encrypt"], Name="app-grant"
    )
    named = kms.create_key(Description="named")["KeyMetadata"]["Arn"]
    kms.put_key_policy(
        KeyId=named,
        PolicyName="default",
        Policy=policy(
            {
                "Sid": "Only",
                "Effect": "Allow",
                "Principal": {"AWS": role_arn(MAIN, "only")},
                "Action": "kms:Decrypt",
                "Resource": "*",
            }
        ),
    )
    return {"delegating": delegating, "named": named}


def run_all() -> None:
    source = source_for(MAIN)
    run = ingest.ingest_iam(source)
    assert run is not None and run.status == run.Status.SUCCEEDED
    services.ingest_keys(source, REGION)
    assert analysis.analyse_account(MAIN) is not None


def key_access(*args: str) -> str:
    out = io.StringIO()
    call_command("key_access", *args, stdout=out)
    return out.getvalue()


def entries_of(result: dict, key: str, principal: str) -> list[dict]:
    (found,) = [k for k in result["keys"] if k["key"] == key]
    return [e for e in found["access"] if e["principal"] == principal]


def test_key_access_prints_who_can_use_each_key_how_and_whether_they_use_it(aws):
    keys = build(session_in(MAIN).client("iam", region_name=REGION), kms_in(MAIN))
    ingest_events(
        call(keys["delegating"], NOW - timedelta(days=2), identity=None),  # app-backend: not an IAM role here
        call(
            keys["delegating"],
            NOW - timedelta(days=1),
            identity={
                "type": "AssumedRole",
                "arn": f"arn:aws:sts::{MAIN}:assumed-role/reader/i-1",
                "accountId": MAIN,
                "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role_arn(MAIN, "reader")}},
            },
        ),
    )
    run_all()

    result = json.loads(key_access("--format", "json"))
    assert set(result) == {"keys", "escalations"}
    assert {k["key"] for k in result["keys"]} == set(keys.values())

    (reader,) = entries_of(result, keys["delegating"], role_arn(MAIN, "reader"))
    assert set(reader) >= {"principal", "actions", "conditional", "conditions", "via", "used"}
    assert reader["actions"] == ["kms:Decrypt"] and reader["conditional"] is False and reader["conditions"] == {}
    assert {"kind": "key-policy", "name": "Enable IAM policies"} in reader["via"]
    assert {"kind": "identity-policy", "name": "decrypt-everything"} in reader["via"]
    assert reader["used"] is True
    (idle,) = entries_of(result, keys["delegating"], role_arn(MAIN, "idle"))
    assert idle["used"] is False
    (grant,) = entries_of(result, keys["delegating"], role_arn(MAIN, "grantee"))
    assert grant["actions"] == ["kms:Encrypt"] and grant["via"][0]["kind"] == "grant"

    # The key that names one role: identity policies do not count there.
    assert entries_of(result, keys["named"], role_arn(MAIN, "only"))
    assert not entries_of(result, keys["named"], role_arn(MAIN, "reader"))

    (escalation,) = [e for e in result["escalations"] if e["principal"] == role_arn(MAIN, "writer")]
    assert escalation["key"] == keys["delegating"]
    assert escalation["path"] == [{"action": "iam:PutRolePolicy", "on": role_arn(MAIN, "writer")}]
    assert "kms:Decrypt" in escalation["gains"]

    one = json.loads(key_access("--format", "json", "--principal", role_arn(MAIN, "reader")))
    assert [k["key"] for k in one["keys"]] == [keys["delegating"]]
    assert {e["principal"] for k in one["keys"] for e in k["access"]} == {role_arn(MAIN, "reader")}
    only_named = json.loads(key_access("--key", keys["named"]))
    assert [k["key"] for k in only_named["keys"]] == [keys["named"]] and only_named["escalations"] == []

    rows = list(csv.reader(io.StringIO(key_access("--format", "csv", "--key", keys["delegating"]))))
    assert rows[0] == ["key", "principal", "actions", "conditional", "conditions", "via", "used", "notes"]
    (row,) = [r for r in rows[1:] if r[1:2] == [role_arn(MAIN, "reader")]]
    assert row[0] == keys["delegating"] and json.loads(row[2]) == ["kms:Decrypt"] and row[6] == "true"
    assert ["key", "principal", "gains", "path"] in rows  # then the escalation paths


def test_a_formula_in_a_policy_name_is_neutralised_in_the_csv_and_an_unreadable_policy_is_listed(aws):
    iam = session_in(MAIN).client("iam", region_name=REGION)
    iam.create_role(RoleName="formula", AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
    iam.put_role_policy(RoleName="formula", PolicyName="=HYPERLINK(1)", PolicyDocument=document(allow("kms:Decrypt")))
    iam.create_role(RoleName="per-user", AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
    iam.put_role_policy(
        RoleName="per-user",
        PolicyName="own-key",
        PolicyDocument=document(allow("kms:Decrypt", f"arn:aws:kms:{REGION}:{MAIN}:key/${{aws:username}}")),
    )
    key = kms_in(MAIN).create_key()["KeyMetadata"]["Arn"]
    kms_in(MAIN).put_key_policy(KeyId=key, PolicyName="default", Policy=policy(root_statement(MAIN)))
    run_all()

    result = json.loads(key_access("--key", key))
    (listed,) = [u for u in result["keys"][0]["unreadable"] if u["principal"] == role_arn(MAIN, "per-user")]
    assert listed["document"] == "identity-policy:own-key" and "policy variable" in listed["reason"]
    assert not entries_of(result, key, role_arn(MAIN, "per-user"))  # neither an Allow...
    assert entries_of(result, key, role_arn(MAIN, "formula"))  # ...nor does it stop the rest
    rows = list(csv.reader(io.StringIO(key_access("--format", "csv"))))
    cells = [cell for row in rows for cell in row]
    assert any("=HYPERLINK(1)" in cell for cell in cells)  # shown, as text
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")]


def test_the_access_findings_hold_and_resolve_with_the_analysis(aws):
    iam = session_in(MAIN).client("iam", region_name=REGION)
    keys = build(iam, kms_in(MAIN))
    stranger = role_arn(MAIN, "unknown-caller")
    ingest_events(
        call(
            keys["named"],
            NOW - timedelta(days=1),
            identity={
                "type": "AssumedRole",
                "arn": f"arn:aws:sts::{MAIN}:assumed-role/unknown-caller/s",
                "accountId": MAIN,
                "sessionContext": {"sessionIssuer": {"type": "Role", "arn": stranger}},
            },
        )
    )
    run_all()
    findings.recompute()
    open_findings = {(f.kind, f.key, f.subject) for f in Finding.objects.open()}
    managed_arn = f"arn:aws:iam::{MAIN}:policy/decrypt-everything"
    assert ("iam-decrypt-all-keys-managed", "", managed_arn) in open_findings
    assert ("iam-decrypt-all-keys-inline", "", f"{role_arn(MAIN, 'idle')}#idle-decrypt") in open_findings
    assert ("escalation-path", keys["delegating"], role_arn(MAIN, "writer")) in open_findings
    assert Finding.objects.get(kind="escalation-path").severity == "high"
    assert ("unused-access", keys["delegating"], f"{role_arn(MAIN, 'idle')}|decrypt") in open_findings
    # Someone who can decrypt nothing on the named key... but did: unexplained. "only" never did: unused.
    assert ("access-unexplained", keys["named"], stranger) in open_findings
    assert ("unused-access", keys["named"], f"{role_arn(MAIN, 'only')}|decrypt") in open_findings
    # Negative cases: the writer's own policy is not decrypt-all; the reader used its right.
    assert not [f for f in open_findings if f[0] == "iam-decrypt-all-keys-inline" and "writer" in f[2]]
    assert not [
        f
        for f in open_findings
        if f[0] == "unused-access" and role_arn(MAIN, "reader") in f[2] and f[1] == keys["named"]
    ]
    unused = Finding.objects.get(kind="unused-access", subject=f"{role_arn(MAIN, 'idle')}|decrypt")
    assert "idle-decrypt" in " ".join(unused.evidence["change"])

    # The policy goes: its findings resolve on the next analysis.
    iam.delete_role_policy(RoleName="idle", PolicyName="idle-decrypt")
    run_all()
    findings.recompute()
    still = {(f.kind, f.subject) for f in Finding.objects.open()}
    assert ("iam-decrypt-all-keys-inline", f"{role_arn(MAIN, 'idle')}#idle-decrypt") not in still
    assert ("unused-access", f"{role_arn(MAIN, 'idle')}|decrypt") not in still
