"""Escalation paths on AWS-shaped worlds, each positive and negative, and how the patterns compare
with cloudsplaining's and the bad-input checks with parliament's."""

from __future__ import annotations

import json

import pytest
from cloudsplaining.shared.constants import PRIVILEGE_ESCALATION_METHODS
from parliament import analyze_policy_string

from access.escalation import MAX_STEPS, key_escalations
from access.policy import KeyInput, World, evaluate_key, parse_document

A = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{A}:key/11111111-1111-1111-1111-111111111111"
DELEGATING = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{A}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}


def arn(kind: str, name: str) -> str:
    return f"arn:aws:iam::{A}:{kind}/{name}"


def doc(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action, resource="*", **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def trusting(principal: dict) -> dict:
    return doc({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"})


EC2 = trusting({"Service": "ec2.amazonaws.com"})


def role(name: str, *statements: dict, trust=EC2, managed=(), boundary=None) -> dict:
    entry = {
        "RoleName": name,
        "Arn": arn("role", name),
        "AssumeRolePolicyDocument": trust,
        "RolePolicyList": [{"PolicyName": f"{name}-inline", "PolicyDocument": doc(*statements)}] if statements else [],
        "AttachedManagedPolicies": [{"PolicyName": m.rsplit("/", 1)[-1], "PolicyArn": m} for m in managed],
    }
    if boundary:
        entry["PermissionsBoundary"] = {"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": boundary}
    return entry


def user(name: str, *statements: dict) -> dict:
    return {
        "UserName": name,
        "Arn": arn("user", name),
        "GroupList": [],
        "UserPolicyList": [{"PolicyName": f"{name}-inline", "PolicyDocument": doc(*statements)}] if statements else [],
        "AttachedManagedPolicies": [],
    }


def managed(name: str, *versions: dict) -> dict:
    return {
        "PolicyName": name,
        "Arn": f"arn:aws:iam::{A}:policy/{name}",
        "DefaultVersionId": "v1",
        "PolicyVersionList": [
            {"Document": d, "VersionId": f"v{i + 1}", "IsDefaultVersion": i == 0} for i, d in enumerate(versions)
        ],
    }


VERSIONED = managed("versioned", doc(allow("s3:GetObject")), doc(allow("kms:Decrypt")))
S3_ONLY = managed("s3-only", doc(allow("s3:*")))


def world(*, roles=(), users=()) -> World:
    details = {
        "UserDetailList": list(users),
        "GroupDetailList": [],
        "RoleDetailList": list(roles),
        "Policies": [VERSIONED, S3_ONLY],
    }
    return World.build({A: details})


def paths(w: World, key_policy=DELEGATING, **kwargs) -> dict[str, list]:
    key = KeyInput(KEY, A, key_policy)
    found: dict[str, list] = {}
    for escalation in key_escalations(w, key, evaluate_key(w, key), **kwargs):
        found.setdefault(escalation.principal, []).append(escalation)
    return found


def steps(escalation) -> list[tuple[str, str]]:
    return [(s.action, s.on) for s in escalation.path]


def test_create_grant_on_the_key_is_a_path_limited_by_kms_grant_operations():
    w = world(
        roles=[
            role("granter", allow("kms:CreateGrant", KEY)),
            role(
                "narrow",
                allow(
                    "kms:CreateGrant",
                    KEY,
                    Condition={"ForAllValues:StringEquals": {"kms:GrantOperations": ["Encrypt"]}},
                ),
            ),
            role("lister", allow("kms:ListGrants", KEY)),
        ]
    )
    found = paths(w)
    (granter,) = found[arn("role", "granter")]
    assert steps(granter) == [("kms:CreateGrant", KEY)] and "kms:Decrypt" in granter.gains
    (narrow,) = found[arn("role", "narrow")]
    assert narrow.gains == ["kms:Encrypt"]
    assert narrow.as_dict()["path"][0]["conditions"] == {
        "ForAllValues:StringEquals": {"kms:GrantOperations": ["Encrypt"]}
    }
    assert arn("role", "lister") not in found


def test_assuming_a_role_that_can_rewrite_itself_is_a_two_step_path():
    w = world(
        roles=[
            role(
                "stepping",
                allow("iam:PutRolePolicy", arn("role", "stepping")),
                trust=trusting({"AWS": arn("user", "eve")}),
            ),
        ],
        users=[user("eve"), user("mallory")],
    )
    found = paths(w)
    (eve,) = found[arn("user", "eve")]
    assert steps(eve) == [("sts:AssumeRole", arn("role", "stepping")), ("iam:PutRolePolicy", arn("role", "stepping"))]
    assert "kms:Decrypt" in eve.gains
    assert arn("user", "mallory") not in found


def test_passing_a_role_to_a_lambda_it_creates_and_invokes_is_a_path():
    lambda_trust = trusting({"Service": "lambda.amazonaws.com"})
    w = world(
        roles=[role("lambda-exec", allow("kms:Decrypt"), trust=lambda_trust)],
        users=[
            user(
                "frank",
                allow("iam:PassRole", arn("role", "lambda-exec")),
                allow(["lambda:CreateFunction", "lambda:InvokeFunction"]),
            ),
            user("passonly", allow("iam:PassRole", arn("role", "lambda-exec"))),
        ],
    )
    found = paths(w)
    (frank,) = found[arn("user", "frank")]
    assert frank.path[0].action == "iam:PassRole" and frank.path[0].on == arn("role", "lambda-exec")
    assert {"lambda:CreateFunction", "lambda:InvokeFunction"} <= {s.action for s in frank.path}
    assert frank.gains == ["kms:Decrypt"]
    assert arn("user", "passonly") not in found


def test_setting_a_stored_policy_version_as_default_is_a_path_only_when_that_version_gives_the_right():
    w = world(
        roles=[
            role("versioner", allow("iam:SetDefaultPolicyVersion", VERSIONED["Arn"]), managed=[VERSIONED["Arn"]]),
            role("s3-versioner", allow("iam:SetDefaultPolicyVersion", S3_ONLY["Arn"]), managed=[S3_ONLY["Arn"]]),
            role("creator", allow("iam:CreatePolicyVersion", VERSIONED["Arn"])),  # not attached to it
        ]
    )
    found = paths(w)
    (versioner,) = found[arn("role", "versioner")]
    assert steps(versioner) == [("iam:SetDefaultPolicyVersion", VERSIONED["Arn"])] and versioner.gains == [
        "kms:Decrypt"
    ]
    assert arn("role", "s3-versioner") not in found
    assert arn("role", "creator") not in found


def test_rewriting_the_trust_of_a_role_that_can_decrypt_is_a_path():
    w = world(
        roles=[
            role("decrypter", allow("kms:Decrypt")),
            role("truster", allow("iam:UpdateAssumeRolePolicy", arn("role", "decrypter"))),
        ]
    )
    (truster,) = paths(w)[arn("role", "truster")]
    assert steps(truster) == [
        ("iam:UpdateAssumeRolePolicy", arn("role", "decrypter")),
        ("sts:AssumeRole", arn("role", "decrypter")),
    ]
    assert truster.gains == ["kms:Decrypt"]


def test_a_boundary_or_a_key_that_does_not_delegate_stops_an_identity_policy_write():
    w = world(
        roles=[
            role("bounded-writer", allow("iam:PutRolePolicy", arn("role", "bounded-writer")), boundary=S3_ONLY["Arn"]),
            role("writer", allow("iam:PutRolePolicy", arn("role", "writer"))),
        ]
    )
    assert arn("role", "bounded-writer") not in paths(w)
    named_only = doc(
        {"Effect": "Allow", "Principal": {"AWS": arn("role", "someone")}, "Action": "kms:Decrypt", "Resource": "*"}
    )
    assert paths(w, key_policy=named_only) == {}
    assert arn("role", "writer") in paths(w)


def test_paths_longer_than_the_bound_are_not_followed():
    # eve -> hop1 -> hop2 -> hop3 (which can rewrite itself): four steps.
    w = world(
        roles=[
            role("hop1", trust=trusting({"AWS": arn("user", "eve")})),
            role("hop2", trust=trusting({"AWS": arn("role", "hop1")})),
            role("hop3", allow("iam:PutRolePolicy", arn("role", "hop3")), trust=trusting({"AWS": arn("role", "hop2")})),
        ],
        users=[user("eve")],
    )
    assert MAX_STEPS == 3
    assert arn("user", "eve") not in paths(w)
    (longer,) = paths(w, max_steps=4)[arn("user", "eve")]
    assert len(longer.path) == 4


def test_the_identity_write_patterns_are_cloudsplaining_patterns():
    listed = {a for actions in PRIVILEGE_ESCALATION_METHODS.values() for a in actions}
    for action in (
        "iam:putuserpolicy",
        "iam:putrolepolicy",
        "iam:putgrouppolicy",
        "iam:attachuserpolicy",
        "iam:attachrolepolicy",
        "iam:attachgrouppolicy",
        "iam:createpolicyversion",
        "iam:setdefaultpolicyversion",
        "iam:updateassumerolepolicy",
        "iam:passrole",
    ):
        assert action in listed


@pytest.mark.parametrize(
    ("text", "parliament_issue"),
    [
        ('{"Version": "2012-10-17", "Statement": [', "MALFORMED_JSON"),
        (
            json.dumps(doc(allow("kms:Decrypt", Condition={"StringEqualz": {"kms:ViaService": "x"}}))),
            "UNKNOWN_OPERATOR",
        ),
        (
            json.dumps(doc(allow("kms:Decrypt", Condition={"StringEquals": {"kms:Frobnicate": "x"}}))),
            "UNKNOWN_CONDITION_FOR_ACTION",
        ),
    ],
)
def test_what_parliament_calls_malformed_the_evaluator_calls_unreadable(text, parliament_issue):
    assert parliament_issue in {f.issue for f in analyze_policy_string(text).findings}
    assert parse_document(text, "identity-policy", "p").problems


def test_the_evaluator_goes_further_than_parliament_on_policy_variables():
    text = json.dumps(doc(allow("kms:Decrypt", f"arn:aws:kms:us-east-1:{A}:key/${{aws:username}}")))
    assert not analyze_policy_string(text).findings  # parliament accepts it
    (problem,) = parse_document(text, "identity-policy", "p").problems
    assert "policy variable" in problem.reason
