"""The demo world's IAM: the users, groups, roles and policies behind its CloudTrail activity.

Pure data (`iam_world`) plus the seeder (`seed_iam`), which creates it in the emulator through
boto3 in each account. Every principal that the activity shows calling KMS exists here with a
policy that lets it (or, on purpose, one that does not), and a few situations are planted so that
each access finding has a case:

- iam-decrypt-all-keys-managed: the managed policy `kms-decrypt-everything` (kms:Decrypt on `*`),
  attached to prod's report-builder;
- iam-decrypt-all-keys-inline: bob.sre's inline `break-glass-decrypt` (kms:Decrypt and
  kms:ReEncryptFrom on `*`);
- escalation-path: prod's `key-policy-editor` may rewrite key policies (kms:PutKeyPolicy) but use
  no key; data's `ci-deployer` may write any role's inline policy (iam:PutRolePolicy);
- unused-access: prod's `legacy-batch` may decrypt every prod key and never calls KMS; so does the
  NotAction `Developer` role;
- access-unexplained: data's `spark-driver` calls KMS in the activity but IAM gives it nothing;
- a permission boundary that removes the right (prod's `contractor`, in the admins group), an
  explicit Deny on one key (data's analytics-notebook on the unused 2023 archive key), a role allowed only
  another key (ml-training: the warehouse key, denied on the lake in the activity), a conditional
  `kms:ViaService` right (ingest-pipeline-role), and an AssumeRole chain (the data engineers may
  assume platform-admin, which holds kms:*).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .activity import ADMIN_USERS, APP_ROLES, DATA, OTHER_ACCOUNT, PROD, DemoKey

READER_ROLE = "kmsdash-reader"  # demo.seed's reader role (imported there: seed imports this module)
USE = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]


def _document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(actions: Any, resources: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": actions, "Resource": resources, **extra}


def _trust(*principals: str, service: str = "") -> str:
    principal: dict[str, Any] = {"Service": service} if service else {"AWS": list(principals)}
    return _document({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"})


@dataclass
class Role:
    name: str
    trust: str
    inline: dict[str, str] = field(default_factory=dict)
    managed: list[str] = field(default_factory=list)  # names of this account's managed policies
    boundary: str = ""


@dataclass
class User:
    name: str
    groups: list[str] = field(default_factory=list)
    inline: dict[str, str] = field(default_factory=dict)
    managed: list[str] = field(default_factory=list)
    boundary: str = ""


@dataclass
class Account:
    policies: dict[str, str] = field(default_factory=dict)  # managed policy name -> document
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> managed policy names
    users: list[User] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)


def _keys_in(keys: Sequence[DemoKey], account: str) -> list[str]:
    return [k.arn for k in keys if k.spec.account == account]


def _key(keys: Sequence[DemoKey], alias: str) -> str:
    return next(k.arn for k in keys if k.spec.alias == alias)


def iam_world(keys: Sequence[DemoKey]) -> dict[str, Account]:
    """Per account, what IAM holds; key ARNs are the ones the emulator gave the demo keys."""
    world = {PROD: Account(), DATA: Account()}
    for account, iam in world.items():
        own_keys = f"arn:aws:kms:*:{account}:key/*"
        iam.policies["app-kms-use"] = _document(_allow(USE, own_keys))
        iam.policies["admin-access"] = _document(_allow("*"))
        iam.groups["admins"] = ["admin-access"]
        for name in ADMIN_USERS[account]:
            iam.users.append(User(name, groups=["admins"]))
        ec2 = _trust(service="ec2.amazonaws.com")
        for role in APP_ROLES[account]:
            if account == DATA and role == "spark-driver":
                continue  # planted below: IAM gives it nothing
            iam.roles.append(Role(role, ec2, managed=["app-kms-use"]))
        for spec in [k.spec for k in keys if k.spec.account == account]:
            if spec.workload == "ebs":
                # EBS creates and retires the volumes' grants as this role (CreateGrant, RetireGrant).
                grants = _document(_allow(["kms:CreateGrant", "kms:RetireGrant", "kms:ListGrants"], own_keys))
                iam.roles.append(Role("ec2-autoscaling", ec2, inline={"ebs-grants": grants}, managed=["app-kms-use"]))
                # The EBS key's other grantee: the grant is its only right (KMS wants it to exist).
                iam.roles.append(Role("backup-service", _trust(service="backup.amazonaws.com")))
            elif spec.workload == "lambda" and spec.alias != "data-eu-pipeline":
                lambda_trust = _trust(service="lambda.amazonaws.com")
                iam.roles.append(
                    Role(
                        f"{spec.resource}-role",
                        lambda_trust,
                        inline={"env-decrypt": _document(_allow("kms:Decrypt", own_keys))},
                    )
                )
            elif spec.workload == "signing":
                signing = _allow(["kms:Sign", "kms:Verify", "kms:GetPublicKey"], _key(keys, spec.alias))
                iam.roles.append(Role(spec.resource, ec2, inline={"sign-releases": _document(signing)}))
        # Cross-account callers: their own account's IAM must allow the other account's key too.
        for spec in [k.spec for k in keys if k.spec.cross_account_role and OTHER_ACCOUNT[k.spec.account] == account]:
            arn = _key(keys, spec.alias)
            cross = {
                "cross-account-decrypt": _document(
                    _allow(["kms:Decrypt", "kms:GenerateDataKey*", "kms:DescribeKey"], arn)
                )
            }
            existing = next((r for r in iam.roles if r.name == spec.cross_account_role), None)
            if existing is not None:
                existing.inline.update(cross)
            else:
                iam.roles.append(Role(spec.cross_account_role, ec2, inline=cross))

        # kmsdash's own reader: reads, never uses a key.
        reader = _allow(
            [
                "kms:List*",
                "kms:Describe*",
                "kms:Get*",
                "cloudtrail:LookupEvents",
                "cloudtrail:Describe*",
                "cloudtrail:GetEventSelectors",
                "s3:GetObject",
                "s3:ListBucket",
                "ce:GetCostAndUsage",
                "iam:GetAccountAuthorizationDetails",
                "organizations:Describe*",
                "organizations:List*",
            ]
        )
        iam.roles.append(
            Role(READER_ROLE, _trust(f"arn:aws:iam::{account}:root"), inline={"kmsdash-read": _document(reader)})
        )

    prod, data = world[PROD], world[DATA]
    # prod: the KMS.1 and KMS.2 cases, an editor who could escalate, unused rights, a boundary.
    prod.policies["kms-decrypt-everything"] = _document(_allow("kms:Decrypt"))
    next(r for r in prod.roles if r.name == "report-builder").managed.append("kms-decrypt-everything")
    sre = next(u for u in prod.users if u.name == ADMIN_USERS[PROD][1])
    sre.inline["break-glass-decrypt"] = _document(_allow(["kms:Decrypt", "kms:ReEncryptFrom"]))
    root = f"arn:aws:iam::{PROD}:root"
    prod.roles.append(
        Role(
            "key-policy-editor",
            _trust(root),
            inline={"edit-key-policies": _document(_allow(["kms:PutKeyPolicy", "kms:GetKeyPolicy", "kms:ListKeys"]))},
        )
    )
    prod.roles.append(Role("legacy-batch", _trust(service="ec2.amazonaws.com"), managed=["app-kms-use"]))
    prod.roles.append(
        Role(
            "Developer",
            _trust(root),
            inline={
                "power-user": _document({"Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "Resource": "*"})
            },
        )
    )
    prod.policies["no-kms-boundary"] = _document(_allow(["s3:*", "ec2:Describe*", "cloudwatch:*"]))
    prod.users.append(User("contractor", groups=["admins"], boundary="no-kms-boundary"))

    # data: the unexplained caller, a Deny on one key, one key only, a condition, a chain, escalation.
    data.roles.append(
        Role("spark-driver", _trust(service="ec2.amazonaws.com"), inline={"s3-read": _document(_allow("s3:GetObject"))})
    )
    notebook = next(r for r in data.roles if r.name == "analytics-notebook")
    # The 2023 archive key is the one key of the account nobody calls, so the Deny agrees with the activity.
    notebook.inline["no-old-archive"] = _document(
        {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": _key(keys, "data-eu-archive-2023")}
    )
    data.roles.append(
        Role(
            "ml-training",
            _trust(service="sagemaker.amazonaws.com"),
            inline={"warehouse-only": _document(_allow(USE, _key(keys, "data-warehouse")))},
        )
    )
    via_lambda = {"StringEquals": {"kms:ViaService": "lambda.eu-west-1.amazonaws.com"}}
    data.roles.append(
        Role(
            "ingest-pipeline-role",
            _trust(service="lambda.amazonaws.com"),
            inline={
                "env-decrypt": _document(_allow("kms:Decrypt", f"arn:aws:kms:*:{DATA}:key/*", Condition=via_lambda))
            },
        )
    )
    engineers = [f"arn:aws:iam::{DATA}:user/{name}" for name in ADMIN_USERS[DATA]]
    data.roles.append(Role("platform-admin", _trust(*engineers), inline={"kms-admin": _document(_allow("kms:*"))}))
    data.policies["assume-platform-admin"] = _document(
        _allow("sts:AssumeRole", f"arn:aws:iam::{DATA}:role/platform-admin")
    )
    data.groups["data-engineers"] = ["assume-platform-admin"]
    for user in data.users:
        user.groups = ["data-engineers"]
    data.roles.append(
        Role(
            "ci-deployer",
            _trust(f"arn:aws:iam::{DATA}:root"),
            inline={
                "deploy-roles": _document(
                    _allow(["iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:PassRole"], f"arn:aws:iam::{DATA}:role/*")
                )
            },
        )
    )
    return world


def seed_iam(iam_client_for, keys: Sequence[DemoKey]) -> dict[str, int]:
    """Create the world in each account (`iam_client_for(account)` gives that account's IAM client).
    Returns the number of principals made per account."""
    made: dict[str, int] = {}
    for account, world in iam_world(keys).items():
        iam = iam_client_for(account)
        arns = {}
        for name, document in world.policies.items():
            arns[name] = iam.create_policy(PolicyName=name, PolicyDocument=document)["Policy"]["Arn"]
        for group, policies in world.groups.items():
            iam.create_group(GroupName=group)
            for name in policies:
                iam.attach_group_policy(GroupName=group, PolicyArn=arns[name])
        for user in world.users:
            iam.create_user(UserName=user.name)
            for group in user.groups:
                iam.add_user_to_group(GroupName=group, UserName=user.name)
            for name, document in user.inline.items():
                iam.put_user_policy(UserName=user.name, PolicyName=name, PolicyDocument=document)
            for name in user.managed:
                iam.attach_user_policy(UserName=user.name, PolicyArn=arns[name])
            if user.boundary:
                iam.put_user_permissions_boundary(UserName=user.name, PermissionsBoundary=arns[user.boundary])
        for role in world.roles:
            iam.create_role(RoleName=role.name, AssumeRolePolicyDocument=role.trust)
            for name, document in role.inline.items():
                iam.put_role_policy(RoleName=role.name, PolicyName=name, PolicyDocument=document)
            for name in role.managed:
                iam.attach_role_policy(RoleName=role.name, PolicyArn=arns[name])
            if role.boundary:
                iam.put_role_permissions_boundary(RoleName=role.name, PermissionsBoundary=arns[role.boundary])
        made[account] = len(world.users) + len(world.roles)
    return made
