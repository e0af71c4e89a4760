"""Properties of the access evaluator, each checked on generated policies (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access.policy import KeyInput, World, evaluate_key

A = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{A}:key/11111111-1111-1111-1111-111111111111"
OTHER_KEY = f"arn:aws:kms:us-east-1:{A}:key/22222222-2222-2222-2222-222222222222"
ROLES = ("App", "Ops", "Batch")
ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:Re*", "kms:*", "kms:PutKeyPolicy", "kms:Create*"]
ACTIONS_AND_STAR = ACTIONS + ["*"]
RESOURCES = ["*", KEY, OTHER_KEY, f"arn:aws:kms:us-east-1:{A}:key/*", f"arn:aws:kms:us-east-1:{A}:alias/app"]
CONDITIONS = [
    None,
    {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}},
    {"Bool": {"aws:MultiFactorAuthPresent": "true"}},
    {"StringEquals": {"kms:CallerAccount": A}},
]
SMALL = [
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:ReEncryptFrom",
    "kms:PutKeyPolicy",
    "kms:CreateGrant",
]


def role_arn(name: str) -> str:
    return f"arn:aws:iam::{A}:role/{name}"


def statement(effect: str, actions: list[str], resources: list[str], condition, negate: bool) -> dict:
    found = {"Effect": effect, ("NotAction" if negate else "Action"): actions, "Resource": resources}
    if condition:
        found["Condition"] = condition
    return found


def statements(effect: str, actions=ACTIONS_AND_STAR):
    return st.builds(
        statement,
        st.just(effect),
        st.lists(st.sampled_from(actions), min_size=1, max_size=2),
        st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=2),
        st.sampled_from(CONDITIONS),
        st.booleans(),
    )


def identity_statements():
    return st.lists(st.one_of(statements("Allow"), statements("Deny")), max_size=3)


def key_principal(choice: str):
    return {"AWS": f"arn:aws:iam::{A}:root"} if choice == "root" else {"AWS": role_arn(choice)}


def key_statement(effect: str, principal: str, actions: list[str], condition) -> dict:
    found = {"Effect": effect, "Principal": key_principal(principal), "Action": actions, "Resource": "*"}
    if condition:
        found["Condition"] = condition
    return found


def key_statements(principals=("root",) + ROLES):
    return st.lists(
        st.builds(
            key_statement,
            st.sampled_from(["Allow", "Allow", "Deny"]),
            st.sampled_from(principals),
            st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2),
            st.sampled_from(CONDITIONS),
        ),
        min_size=1,
        max_size=3,
    )


def details(policies: dict[str, list[dict]]) -> dict:
    return {
        "UserDetailList": [],
        "GroupDetailList": [],
        "RoleDetailList": [
            {
                "RoleName": name,
                "Arn": role_arn(name),
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
                    ],
                },
                "RolePolicyList": [
                    {
                        "PolicyName": "p",
                        "PolicyDocument": {"Version": "2012-10-17", "Statement": policies.get(name, [])},
                    }
                ]
                if policies.get(name)
                else [],
                "AttachedManagedPolicies": [],
            }
            for name in ROLES
        ],
        "Policies": [],
    }


def rights(policies: dict[str, list[dict]], key_policy: list[dict]) -> dict[tuple[str, str], bool]:
    """(principal, action) -> unconditional?"""
    world = World.build({A: details(policies)})
    access = evaluate_key(world, KeyInput(KEY, A, {"Version": "2012-10-17", "Statement": key_policy}), actions=SMALL)
    found: dict[tuple[str, str], bool] = {}
    for right in access.rights:
        found[(right.principal, right.action)] = (
            found.get((right.principal, right.action), False) or not right.conditional
        )
    return found


PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROFILE
@given(
    identity=st.fixed_dictionaries({name: identity_statements() for name in ROLES}),
    key_policy=key_statements(),
    extra=statements("Deny"),
    target=st.sampled_from(("key",) + ROLES),
)
def test_adding_a_deny_never_adds_access(identity, key_policy, extra, target):
    before = rights(identity, key_policy)
    if target == "key":
        denied = dict(identity), key_policy + [{**extra, "Principal": {"AWS": "*"}}]
    else:
        denied = {**identity, target: identity[target] + [extra]}, key_policy
    after = rights(*denied)
    assert set(after) <= set(before)
    # Nor does it make a conditional right unconditional.
    assert all(before[k] or not unconditional for k, unconditional in after.items())


@PROFILE
@given(
    identity=st.fixed_dictionaries({name: identity_statements() for name in ROLES}),
    key_policy=key_statements(principals=ROLES),
    extra=statements("Allow", actions=ACTIONS),
    target=st.sampled_from(ROLES),
)
def test_an_identity_allow_changes_nothing_on_a_key_that_does_not_let_the_account_in(
    identity, key_policy, extra, target
):
    before = rights(identity, key_policy)
    after = rights({**identity, target: identity[target] + [extra]}, key_policy)
    assert after == before
