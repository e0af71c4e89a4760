"""The access evaluator on a built world with known answers: each case positive and negative.

Everything is an AWS-shaped dict (GetAccountAuthorizationDetails, key policies, ListGrants), so
these test the pure evaluator without the database or the emulator.
"""

from __future__ import annotations

import copy
import json

import pytest

from access import catalog
from access.escalation import key_escalations
from access.policy import KeyInput, World, decrypt_all_keys_statements, evaluate_key, parse_document

A = "111122223333"
B = "444455556666"
REGION = "us-east-1"
KEY1 = f"arn:aws:kms:{REGION}:{A}:key/11111111-1111-1111-1111-111111111111"
KEY2 = f"arn:aws:kms:{REGION}:{A}:key/22222222-2222-2222-2222-222222222222"
KEY3 = f"arn:aws:kms:{REGION}:{A}:key/33333333-3333-3333-3333-333333333333"


def arn(kind: str, name: str, account: str = A) -> str:
    return f"arn:aws:iam::{account}:{kind}/{name}"


def doc(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action, resource="*", **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action, resource="*", **extra) -> dict:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def trust(*principals: str, service: str = "") -> dict:
    principal: dict[str, object] = {"Service": service} if service else {"AWS": list(principals)}
    return doc({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"})


DELEGATE = {
    "Sid": "Enable IAM User Permissions",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{A}:root"},
    "Action": "kms:*",
    "Resource": "*",
}


def role(name: str, *, inline=(), managed=(), boundary=None, trusts=None, account=A) -> dict:
    entry = {
        "RoleName": name,
        "Arn": arn("role", name, account),
        "AssumeRolePolicyDocument": trusts or trust(service="ec2.amazonaws.com"),
        "RolePolicyList": [{"PolicyName": n, "PolicyDocument": d} for n, d in inline],
        "AttachedManagedPolicies": [{"PolicyName": m.rsplit("/", 1)[-1], "PolicyArn": m} for m in managed],
    }
    if boundary:
        entry["PermissionsBoundary"] = {"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": boundary}
    return entry


def user(name: str, *, inline=(), managed=(), groups=(), account=A) -> dict:
    return {
        "UserName": name,
        "Arn": arn("user", name, account),
        "GroupList": list(groups),
        "UserPolicyList": [{"PolicyName": n, "PolicyDocument": d} for n, d in inline],
        "AttachedManagedPolicies": [{"PolicyName": m.rsplit("/", 1)[-1], "PolicyArn": m} for m in managed],
    }


def managed(name: str, document: dict, account=A, versions=()) -> dict:
    listed = [{"Document": document, "VersionId": "v1", "IsDefaultVersion": True}]
    listed += [{"Document": d, "VersionId": f"v{i + 2}", "IsDefaultVersion": False} for i, d in enumerate(versions)]
    return {
        "PolicyName": name,
        "Arn": f"arn:aws:iam::{account}:policy/{name}",
        "DefaultVersionId": "v1",
        "PolicyVersionList": listed,
    }


KMS_FULL = managed("KmsFull", doc(allow("kms:*")))
S3_ONLY = managed("S3Only", doc(allow("s3:*")))
DECRYPT_BOUNDARY = managed("DecryptBoundary", doc(allow("kms:Decrypt")))
DECRYPT_ALL = managed("DecryptAll", doc(allow(["kms:Decrypt", "kms:ReEncryptFrom"])))


def details() -> dict:
    return {
        "UserDetailList": [
            user("alice", groups=["KmsAdmins"]),
            user("bob"),
            user("carol"),
            user("dave"),
        ],
        "GroupDetailList": [
            {
                "GroupName": "KmsAdmins",
                "Arn": arn("group", "KmsAdmins"),
                "GroupPolicyList": [],
                "AttachedManagedPolicies": [{"PolicyName": "KmsFull", "PolicyArn": KMS_FULL["Arn"]}],
            }
        ],
        "RoleDetailList": [
            role("Reader", inline=[("decrypt-all", doc(allow("kms:Decrypt")))]),
            role("OtherKeyOnly", inline=[("key2", doc(allow("kms:Decrypt", KEY2)))]),
            role("AllButOne", inline=[("all", doc(allow("kms:*"), deny("kms:*", KEY1)))]),
            role("NotActionAdmin", inline=[("admin", doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}))]),
            role("NotKms", inline=[("no-kms", doc({"Effect": "Allow", "NotAction": "kms:*", "Resource": "*"}))]),
            role("Bounded", inline=[("decrypt", doc(allow("kms:Decrypt")))], boundary=S3_ONLY["Arn"]),
            role("BoundedOk", inline=[("decrypt", doc(allow("kms:Decrypt")))], boundary=DECRYPT_BOUNDARY["Arn"]),
            role("Only"),
            role("GrantUser"),
            role("Hop", trusts=trust(arn("user", "carol"))),
            role("Target", trusts=trust(arn("role", "Hop")), inline=[("decrypt", doc(allow("kms:Decrypt")))]),
            role("PolicyWriter", inline=[("put", doc(allow("kms:PutKeyPolicy", KEY1)))]),
            role("RoleWriter", inline=[("put", doc(allow("iam:PutRolePolicy", arn("role", "RoleWriter"))))]),
            role("Inline", inline=[("decrypt-star", doc(allow("kms:Decrypt")))]),
            role("Managed", managed=[DECRYPT_ALL["Arn"]]),
        ],
        "Policies": [KMS_FULL, S3_ONLY, DECRYPT_BOUNDARY, DECRYPT_ALL],
    }


def other_account() -> dict:
    return {
        "UserDetailList": [],
        "GroupDetailList": [],
        "RoleDetailList": [
            role("Partner", account=B, inline=[("decrypt", doc(allow("kms:Decrypt")))]),
            role("PartnerIdle", account=B),
        ],
        "Policies": [],
    }


VIA_S3 = {
    "Sid": "Allow access through S3",
    "Effect": "Allow",
    "Principal": {"AWS": "*"},
    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
    "Resource": "*",
    "Condition": {
        "StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com", "kms:CallerAccount": A},
    },
}
PARTNER = {
    "Sid": "Let the partner account in",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
    "Action": "kms:Decrypt",
    "Resource": "*",
}
GRANT = {
    "GrantId": "g-1234",
    "Name": "app-grant",
    "GranteePrincipal": arn("role", "GrantUser"),
    "Operations": ["Decrypt", "DescribeKey"],
    "Constraints": {"EncryptionContextSubset": {"app": "billing"}},
}


def keys() -> dict[str, KeyInput]:
    return {
        "key1": KeyInput(KEY1, A, doc(DELEGATE, VIA_S3, PARTNER), grants=[GRANT]),
        "key2": KeyInput(KEY2, A, json.dumps(doc(DELEGATE))),
        "key3": KeyInput(
            KEY3,
            A,
            doc({"Sid": "Only", "Effect": "Allow", "Principal": {"AWS": arn("role", "Only")}, "Action": "kms:Decrypt"}),
        ),
    }


@pytest.fixture(scope="module")
def world() -> World:
    return World.build({A: details(), B: other_account()})


@pytest.fixture(scope="module")
def access(world):
    return {name: evaluate_key(world, key) for name, key in keys().items()}


def vias(access, principal: str, action: str) -> list[dict]:
    found = []
    for entry in access.entries():
        if entry["principal"] == principal and action in entry["actions"]:
            found.append(entry)
    return found


def test_a_role_allowed_decrypt_on_all_keys_can_decrypt_a_key_that_delegates_to_iam(access):
    assert access["key1"].can(arn("role", "Reader"), "kms:Decrypt", unconditionally=True)
    (entry,) = [e for e in vias(access["key1"], arn("role", "Reader"), "kms:Decrypt") if not e["conditional"]]
    assert {"kind": "key-policy", "name": "Enable IAM User Permissions"} in entry["via"]
    assert {"kind": "identity-policy", "name": "decrypt-all"} in entry["via"]
    assert not access["key1"].can(arn("role", "Reader"), "kms:Encrypt")


def test_a_role_allowed_only_another_key_cannot_use_this_one(access):
    assert not access["key1"].can(arn("role", "OtherKeyOnly"), "kms:Decrypt", unconditionally=True)
    assert access["key2"].can(arn("role", "OtherKeyOnly"), "kms:Decrypt", unconditionally=True)


def test_a_user_gets_kms_star_through_a_groups_managed_policy(access):
    alice = arn("user", "alice")
    for action in ("kms:Decrypt", "kms:ScheduleKeyDeletion", "kms:PutKeyPolicy"):
        assert access["key2"].can(alice, action, unconditionally=True)
    (entry,) = vias(access["key2"], alice, "kms:ScheduleKeyDeletion")
    assert {"kind": "identity-policy", "name": "KmsFull"} in entry["via"]
    assert not access["key2"].of(arn("user", "bob"))


def test_an_allow_on_all_keys_with_a_deny_on_one_loses_that_one_only(access):
    assert not access["key1"].can(arn("role", "AllButOne"), "kms:Encrypt")
    assert access["key2"].can(arn("role", "AllButOne"), "kms:Encrypt", unconditionally=True)


def test_notaction_administrators_can_use_the_key_and_notaction_kms_cannot(access):
    assert access["key2"].can(arn("role", "NotActionAdmin"), "kms:Decrypt", unconditionally=True)
    assert access["key2"].can(arn("role", "NotActionAdmin"), "kms:ScheduleKeyDeletion", unconditionally=True)
    assert not access["key2"].of(arn("role", "NotKms"))


def test_a_permission_boundary_removes_the_right_and_one_that_allows_it_keeps_it(access):
    assert not access["key2"].of(arn("role", "Bounded"))
    assert access["key2"].can(arn("role", "BoundedOk"), "kms:Decrypt", unconditionally=True)
    (entry,) = vias(access["key2"], arn("role", "BoundedOk"), "kms:Decrypt")
    assert {"kind": "boundary", "name": "DecryptBoundary"} in entry["via"]


def test_a_key_that_names_one_role_and_does_not_delegate_ignores_identity_policies(access):
    assert access["key3"].can(arn("role", "Only"), "kms:Decrypt", unconditionally=True)
    (entry,) = vias(access["key3"], arn("role", "Only"), "kms:Decrypt")
    assert entry["via"] == [{"kind": "key-policy", "name": "Only"}]
    for name in ("Reader", "NotActionAdmin", "Inline"):
        assert not access["key3"].of(arn("role", name))
    assert not access["key3"].of(arn("user", "alice"))


def test_kms_via_service_gives_conditional_access_narrowed_in_words(access):
    bob = arn("user", "bob")
    assert access["key1"].can(bob, "kms:Decrypt")
    assert not access["key1"].can(bob, "kms:Decrypt", unconditionally=True)
    (entry,) = vias(access["key1"], bob, "kms:Decrypt")
    assert entry["conditional"] is True
    assert entry["conditions"] == {"StringEquals": {"kms:ViaService": [f"s3.{REGION}.amazonaws.com"]}}
    assert any("narrowed" in n and "s3.us-east-1.amazonaws.com" in n for n in entry["notes"])
    assert any("kms:CallerAccount" in n for n in entry["notes"])
    assert "kms:GenerateDataKey" in entry["actions"]
    # kms:CallerAccount keeps the partner account's roles out of the S3 statement.
    assert not access["key1"].can(arn("role", "PartnerIdle", B), "kms:GenerateDataKey")
    assert not access["key2"].can(bob, "kms:Decrypt")


def test_another_account_let_in_by_the_key_policy_needs_its_own_iam_allow(access):
    root = f"arn:aws:iam::{B}:root"
    (entry,) = vias(access["key1"], root, "kms:Decrypt")
    assert entry["via"] == [{"kind": "key-policy", "name": "Let the partner account in"}]
    assert access["key1"].can(arn("role", "Partner", B), "kms:Decrypt", unconditionally=True)
    assert not access["key1"].can(arn("role", "PartnerIdle", B), "kms:Decrypt")
    assert not access["key2"].can(arn("role", "Partner", B), "kms:Decrypt")


def test_a_grant_gives_its_operations_to_its_grantee_with_its_constraints(access):
    grantee = arn("role", "GrantUser")
    (entry,) = [e for e in vias(access["key1"], grantee, "kms:Decrypt") if e["via"][0]["kind"] == "grant"]
    assert entry["via"] == [{"kind": "grant", "name": "app-grant"}]
    assert entry["conditional"] is True
    assert entry["conditions"] == {"GrantEncryptionContextSubset": {"kms:EncryptionContext:app": ["billing"]}}
    assert "kms:DescribeKey" in entry["actions"]
    assert not access["key1"].can(grantee, "kms:Encrypt")
    assert not access["key2"].of(grantee)


def test_an_assume_role_chain_reaches_a_role_that_can_decrypt(access):
    carol = arn("user", "carol")
    assert access["key2"].can(carol, "kms:Decrypt", unconditionally=True)
    (entry,) = vias(access["key2"], carol, "kms:Decrypt")
    assert entry["via"][:2] == [
        {"kind": "assume-role", "name": arn("role", "Hop")},
        {"kind": "trust-policy", "name": "Hop"},
    ]
    assert {"kind": "assume-role", "name": arn("role", "Target")} in entry["via"]
    assert not access["key2"].of(arn("user", "dave"))


def test_put_key_policy_and_put_role_policy_are_escalation_paths(world, access):
    found = key_escalations(world, keys()["key1"], access["key1"])
    writer = [e for e in found if e.principal == arn("role", "PolicyWriter")]
    assert writer and writer[0].path[0].action == "kms:PutKeyPolicy" and writer[0].path[0].on == KEY1
    assert "kms:Decrypt" in writer[0].gains
    rolewriter = [e for e in found if e.principal == arn("role", "RoleWriter")]
    assert rolewriter
    assert rolewriter[0].as_dict()["path"] == [{"action": "iam:PutRolePolicy", "on": arn("role", "RoleWriter")}]
    assert "kms:Decrypt" in rolewriter[0].gains
    # key3 does not let the account in: writing an identity policy gains nothing there.
    on_key3 = key_escalations(world, keys()["key3"], access["key3"])
    assert not [e for e in on_key3 if e.principal == arn("role", "RoleWriter")]
    assert not [e for e in on_key3 if e.principal == arn("role", "PolicyWriter")]
    # Bob can write nothing.
    assert not [e for e in found if e.principal == arn("user", "bob")]


def test_managed_and_inline_policies_that_decrypt_all_keys_are_found(world):
    inline = world.identities[arn("role", "Inline")].documents[0]
    managed_doc = world.identities[arn("role", "Managed")].documents[0]
    assert decrypt_all_keys_statements(inline)
    assert decrypt_all_keys_statements(managed_doc)
    one_key = parse_document(doc(allow("kms:Decrypt", KEY2)), "identity-policy", "key2")
    assert not decrypt_all_keys_statements(one_key)
    encrypt_only = parse_document(doc(allow("kms:Encrypt")), "identity-policy", "enc")
    assert not decrypt_all_keys_statements(encrypt_only)


# --- Bad input -------------------------------------------------------------------------------
def bad_world(document) -> World:
    """Role Odd holds `document` as a managed policy (IAM's tightest size limit) beside a readable inline one."""
    account = copy.deepcopy(details())
    odd = managed("Odd", {})
    odd["PolicyVersionList"][0]["Document"] = document
    account["Policies"].append(odd)
    account["RoleDetailList"].append(role("Odd", managed=[odd["Arn"]], inline=[("fine", doc(allow("kms:Encrypt")))]))
    return World.build({A: account})


@pytest.mark.parametrize(
    ("document", "reason", "whole"),
    [
        ('{"Version": "2012-10-17", "Statement": [', "malformed JSON", True),
        (
            doc(allow("kms:Decrypt", Condition={"StringEqualz": {"kms:ViaService": "x"}})),
            "unknown condition operator",
            False,
        ),
        (
            doc(allow("kms:Decrypt", Condition={"StringEquals": {"kms:Frobnicate": "x"}})),
            "unknown condition key",
            False,
        ),
        (doc(allow("kms:Decrypt", f"arn:aws:kms:{REGION}:{A}:key/${{aws:username}}")), "policy variable", False),
        (doc(*[allow("kms:Decrypt", f"arn:aws:kms:{REGION}:{A}:key/{i:040d}") for i in range(60)]), "over IAM", True),
    ],
)
def test_a_policy_the_evaluator_cannot_read_is_unreadable_not_allow_or_deny(document, reason, whole):
    world = bad_world(document)
    access = evaluate_key(world, keys()["key2"])
    odd = arn("role", "Odd")
    problems = [u for u in access.unreadable if u.principal == odd]
    assert problems and reason in problems[0].reason
    assert not access.can(odd, "kms:Decrypt")
    # The rest of the analysis still runs: its readable policy still counts, marked uncertain
    # when the whole document could not be read (a statement about Decrypt says nothing of Encrypt).
    assert access.can(odd, "kms:Encrypt", unconditionally=True)
    (entry,) = vias(access, odd, "kms:Encrypt")
    assert any(n.startswith("uncertain") for n in entry["notes"]) is whole
    assert access.can(arn("role", "Reader"), "kms:Decrypt", unconditionally=True)


def test_an_unreadable_key_policy_is_listed_and_grants_still_count():
    world = World.build({A: details()})
    access = evaluate_key(world, KeyInput(KEY1, A, "{not json", grants=[GRANT]))
    assert any(u.document == "key-policy" and "malformed JSON" in u.reason for u in access.unreadable)
    assert not access.can(arn("role", "Reader"), "kms:Decrypt")
    assert access.can(arn("role", "GrantUser"), "kms:Decrypt")


def test_wildcard_actions_expand_from_the_catalogue():
    assert catalog.expand("kms:GenerateDataKey*") == {
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyPair",
        "kms:GenerateDataKeyPairWithoutPlaintext",
        "kms:GenerateDataKeyWithoutPlaintext",
    }
    assert {"kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:RevokeGrant"} <= catalog.expand("kms:Re*")
    assert "kms:Decrypt" in catalog.expand("kms:*") and "s3:GetObject" not in catalog.expand("kms:*")
    assert catalog.group_of("kms:PutKeyPolicy") == "management"
    assert catalog.group_of("kms:GenerateDataKeyPair") == "generate-data-keys"


def test_an_alias_arn_in_resource_does_not_reach_the_key():
    account = copy.deepcopy(details())
    account["RoleDetailList"].append(
        role("AliasOnly", inline=[("alias", doc(allow("kms:Decrypt", f"arn:aws:kms:{REGION}:{A}:alias/app")))])
    )
    access = evaluate_key(World.build({A: account}), keys()["key2"])
    assert not access.can(arn("role", "AliasOnly"), "kms:Decrypt")


def test_scps_deny_what_identity_policies_allow_and_unread_scps_change_nothing():
    scps = [
        {"Id": "p-full", "Name": "FullAWSAccess", "Content": doc(allow("*")), "TargetId": "r-root"},
        {"Id": "p-nokms", "Name": "NoDecrypt", "Content": doc(deny("kms:Decrypt")), "TargetId": A},
        {"Id": "p-full2", "Name": "FullAWSAccess", "Content": doc(allow("*")), "TargetId": A},
    ]
    limited = evaluate_key(World.build({A: details()}, {A: scps}), keys()["key2"])
    assert not limited.can(arn("role", "Reader"), "kms:Decrypt")
    assert limited.can(arn("user", "alice"), "kms:Encrypt", unconditionally=True)
    unread = evaluate_key(World.build({A: details()}, {A: None}), keys()["key2"])
    assert unread.can(arn("role", "Reader"), "kms:Decrypt", unconditionally=True)


def test_a_grant_to_one_role_session_is_that_sessions_not_the_roles():
    session = f"arn:aws:sts::{A}:assumed-role/GrantUser/i-0abc"
    grant = {"GrantId": "g-2", "Name": "", "GranteePrincipal": session, "Operations": ["Decrypt"]}
    access = evaluate_key(World.build({A: details()}), KeyInput(KEY3, A, doc(), grants=[grant]))
    assert access.can(session, "kms:Decrypt")
    assert not access.can(arn("role", "GrantUser"), "kms:Decrypt")


def test_a_deny_with_notprincipal_spares_only_the_principals_listed_with_their_account():
    def key_with(not_principals: list[str]) -> KeyInput:
        spare = {"Effect": "Deny", "NotPrincipal": {"AWS": not_principals}, "Action": "kms:Decrypt", "Resource": "*"}
        return KeyInput(KEY2, A, doc(DELEGATE, spare))

    world = World.build({A: details()})
    spared = evaluate_key(world, key_with([arn("role", "Reader"), f"arn:aws:iam::{A}:root"]))
    assert spared.can(arn("role", "Reader"), "kms:Decrypt", unconditionally=True)
    assert not spared.can(arn("role", "Inline"), "kms:Decrypt")
    # Without the account listed, IAM does not spare the role either (IAM user guide, NotPrincipal).
    unspared = evaluate_key(world, key_with([arn("role", "Reader")]))
    assert not unspared.can(arn("role", "Reader"), "kms:Decrypt")


def test_notresource_excludes_the_keys_it_names():
    account = copy.deepcopy(details())
    account["RoleDetailList"].append(
        role("NotThatKey", inline=[("nr", doc({"Effect": "Allow", "Action": "kms:Decrypt", "NotResource": KEY2}))])
    )
    world = World.build({A: account})
    assert not evaluate_key(world, keys()["key2"]).can(arn("role", "NotThatKey"), "kms:Decrypt")
    assert evaluate_key(world, keys()["key1"]).can(arn("role", "NotThatKey"), "kms:Decrypt", unconditionally=True)


def test_a_grants_retiring_principal_may_retire_it_and_do_nothing_else():
    grant = {**GRANT, "RetiringPrincipal": arn("role", "Only")}
    access = evaluate_key(World.build({A: details()}), KeyInput(KEY3, A, doc(), grants=[grant]))
    assert access.can(arn("role", "Only"), "kms:RetireGrant", unconditionally=True)
    assert not access.can(arn("role", "Only"), "kms:Decrypt")
    assert not access.can(arn("role", "GrantUser"), "kms:RetireGrant")


def test_resource_control_policies_deny_on_the_keys_account_and_their_conditions_show():
    outside = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {"StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-example"}},
    }
    everyone = {"Effect": "Deny", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*"}
    rcps = [{"Id": "p-rcp", "Name": "KeysStayInTheOrg", "Content": doc(outside, everyone), "TargetId": A}]
    access = evaluate_key(World.build({A: details()}, rcps={A: rcps}), keys()["key2"])
    reader = arn("role", "Reader")
    assert access.can(reader, "kms:Decrypt") and not access.can(reader, "kms:Decrypt", unconditionally=True)
    (entry,) = vias(access, reader, "kms:Decrypt")
    assert entry["conditions"]["Deny"] == {"StringNotEqualsIfExists": {"aws:PrincipalOrgID": ["o-example"]}}
    assert not access.can(arn("user", "alice"), "kms:Encrypt")
    assert access.can(arn("user", "alice"), "kms:ScheduleKeyDeletion", unconditionally=True)
