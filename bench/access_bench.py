"""Cost of the access analysis (access/policy.py + access/escalation.py) on a generated account.

    python bench/access_bench.py --roles 200 --users 100 --keys 20

Pure: no database, no emulator. Builds one account's GetAccountAuthorizationDetails (roles with
inline and managed policies, some with boundaries, some that trust others; users in groups) and
keys (the default delegating policy, some naming roles, a grant each), then times, per key, the
evaluation of every principal's rights and the escalation search. The baseline, measured in the
same run, is reading the documents (World.build): what any analysis has to pay.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from access import catalog  # noqa: E402
from access.escalation import key_escalations  # noqa: E402
from access.policy import KeyInput, World, evaluate_key  # noqa: E402

A = "111122223333"
REGION = "us-east-1"


def doc(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def key_arn(i: int) -> str:
    return f"arn:aws:kms:{REGION}:{A}:key/{i:08d}-0000-0000-0000-000000000000"


def world_details(roles: int, users: int, keys: int) -> dict:
    shapes = [
        doc({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}),
        doc({"Effect": "Allow", "Action": ["kms:Encrypt", "kms:GenerateDataKey*"], "Resource": key_arn(1)}),
        doc({"Effect": "Allow", "Action": "s3:*", "Resource": "*"}),
        doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}),
        doc(
            {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "kms:*", "Resource": key_arn(2)},
        ),
        doc(
            {
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}},
            }
        ),
        # Escalation material: rewrite any role, pass any role to a Lambda function it creates.
        doc(
            {
                "Effect": "Allow",
                "Action": ["iam:PutRolePolicy", "iam:PassRole", "lambda:CreateFunction", "lambda:InvokeFunction"],
                "Resource": "*",
            }
        ),
    ]
    policies = [
        {
            "PolicyName": f"shape-{i}",
            "Arn": f"arn:aws:iam::{A}:policy/shape-{i}",
            "DefaultVersionId": "v1",
            "PolicyVersionList": [{"Document": d, "VersionId": "v1", "IsDefaultVersion": True}],
        }
        for i, d in enumerate(shapes)
    ]
    role_list = []
    for i in range(roles):
        trusted = {"AWS": f"arn:aws:iam::{A}:role/role-{i - 1}"} if i % 10 == 1 else {"Service": "lambda.amazonaws.com"}
        entry = {
            "RoleName": f"role-{i}",
            "Arn": f"arn:aws:iam::{A}:role/role-{i}",
            "AssumeRolePolicyDocument": doc({"Effect": "Allow", "Principal": trusted, "Action": "sts:AssumeRole"}),
            "RolePolicyList": [{"PolicyName": "inline", "PolicyDocument": shapes[i % len(shapes)]}],
            "AttachedManagedPolicies": [
                {"PolicyName": f"shape-{(i * 7) % len(shapes)}", "PolicyArn": policies[(i * 7) % len(shapes)]["Arn"]}
            ],
        }
        if i % 9 == 0:
            entry["PermissionsBoundary"] = {
                "PermissionsBoundaryType": "Policy",
                "PermissionsBoundaryArn": policies[2]["Arn"],
            }
        role_list.append(entry)
    groups = [
        {
            "GroupName": f"group-{g}",
            "Arn": f"arn:aws:iam::{A}:group/group-{g}",
            "GroupPolicyList": [],
            "AttachedManagedPolicies": [{"PolicyName": f"shape-{g}", "PolicyArn": policies[g]["Arn"]}],
        }
        for g in range(len(shapes))
    ]
    user_list = [
        {
            "UserName": f"user-{i}",
            "Arn": f"arn:aws:iam::{A}:user/user-{i}",
            "GroupList": [f"group-{i % len(shapes)}"],
            "UserPolicyList": [],
            "AttachedManagedPolicies": [],
        }
        for i in range(users)
    ]
    return {"UserDetailList": user_list, "GroupDetailList": groups, "RoleDetailList": role_list, "Policies": policies}


def key_inputs(count: int) -> list[KeyInput]:
    found = []
    for i in range(count):
        statements = [
            {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{A}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ]
        if i % 3 == 0:
            statements = [
                {
                    "Sid": "App",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{A}:role/role-{i}"},
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                }
            ]
        grants = [
            {
                "GrantId": f"g{i}",
                "Name": f"grant-{i}",
                "GranteePrincipal": f"arn:aws:iam::{A}:role/role-{i + 1}",
                "Operations": ["Decrypt"],
            }
        ]
        found.append(KeyInput(key_arn(i), A, doc(*statements), grants))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roles", type=int, default=200)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--keys", type=int, default=20)
    args = parser.parse_args()

    catalog.key_actions()  # load the catalogues once, outside the timings
    details = world_details(args.roles, args.users, args.keys)
    started = time.perf_counter()
    world = World.build({A: details})
    build_seconds = time.perf_counter() - started
    evaluate_times, escalation_times, rights, paths = [], [], 0, 0
    for key in key_inputs(args.keys):
        started = time.perf_counter()
        access = evaluate_key(world, key)
        evaluate_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        found = key_escalations(world, key, access)
        escalation_times.append(time.perf_counter() - started)
        rights += len(access.rights)
        paths += len(found)
    principals = args.roles + args.users
    print(f"world: {args.roles} roles, {args.users} users, {len(catalog.key_actions())} key actions, {args.keys} keys")
    print(f"baseline (reading the documents, World.build): {build_seconds * 1000:.1f} ms")
    print(
        f"rights per key:      median {statistics.median(evaluate_times) * 1000:.0f} ms "
        f"(first key {evaluate_times[0] * 1000:.0f} ms, with the role chains), "
        f"{statistics.median(evaluate_times) / build_seconds:.1f}x the baseline"
    )
    print(
        f"escalations per key: median {statistics.median(escalation_times) * 1000:.0f} ms "
        f"(first key {escalation_times[0] * 1000:.0f} ms), {statistics.median(escalation_times) / build_seconds:.1f}x"
    )
    total = build_seconds + sum(evaluate_times) + sum(escalation_times)
    print(
        f"whole account: {total:.1f} s for {principals} principals x {args.keys} keys; {rights} rights, {paths} paths"
    )


if __name__ == "__main__":
    main()
