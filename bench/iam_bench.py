"""IAM read benchmark: `ingest_iam` over real HTTP against a large account, beside the bare read.

    python bench/iam_bench.py [--roles N] [--users N] [--policies N] [--database-url postgres://...]

Fills one account of the AWS emulator (moto in server mode, in a thread of this process) with N
roles (an inline policy each, a managed policy attached), N users in groups and the managed
policies, then measures:
  baseline  the bare read: boto3's GetAccountAuthorizationDetails paginator over every page, nothing
            stored, no pacing;
  ingest    `ingest_iam` (paced to 2 requests/s, merged, hashed, one snapshot row stored);
  rerun     the same read again, unchanged: no new row;
  change    one role's inline policy changed: a new snapshot row and its change list.
Prints seconds, pages, the snapshot's JSON size and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")

from bench.ingest_bench import recreate_pg_database  # noqa: E402

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kmsdash_iam_bench"
DOC = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def fill(iam, roles: int, users: int, policies: int) -> None:
    arns = [
        iam.create_policy(PolicyName=f"policy-{i}", PolicyDocument=json.dumps(DOC))["Policy"]["Arn"]
        for i in range(policies)
    ]
    for i in range(max(1, users // 20)):
        iam.create_group(GroupName=f"group-{i}")
        iam.attach_group_policy(GroupName=f"group-{i}", PolicyArn=arns[i % len(arns)])
    for i in range(users):
        iam.create_user(UserName=f"user-{i}")
        iam.add_user_to_group(GroupName=f"group-{i % max(1, users // 20)}", UserName=f"user-{i}")
    for i in range(roles):
        iam.create_role(RoleName=f"role-{i}", AssumeRolePolicyDocument=json.dumps(TRUST))
        iam.put_role_policy(RoleName=f"role-{i}", PolicyName="inline", PolicyDocument=json.dumps(DOC))
        iam.attach_role_policy(RoleName=f"role-{i}", PolicyArn=arns[i % len(arns)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roles", type=int, default=2000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--database-url", default=DEFAULT_PG)
    args = parser.parse_args()

    from emulator.server import EmulatorServer

    server = EmulatorServer().start()
    os.environ.update(
        AWS_ENDPOINT_URL=server.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        DATABASE_URL=args.database_url,
    )
    recreate_pg_database(args.database_url)
    try:
        import boto3
        import django

        django.setup()
        from django.core.management import call_command

        from access import ingest
        from access.models import AuthorizationChange, AuthorizationSnapshot

        call_command("migrate", verbosity=0)
        iam = boto3.client("iam")
        started = time.perf_counter()
        fill(iam, args.roles, args.users, args.policies)
        print(
            f"{args.roles} roles, {args.users} users, {args.policies} managed policies created in "
            f"{time.perf_counter() - started:.1f} s"
        )

        started = time.perf_counter()
        pages = items = 0
        paginator = iam.get_paginator("get_account_authorization_details")
        for page in paginator.paginate(Filter=ingest.FILTER, PaginationConfig={"PageSize": 1000}):
            pages += 1
            items += sum(len(page.get(name) or []) for name in ingest.LISTS)
        base = time.perf_counter() - started
        print(f"baseline  bare paginated read            {base:>7.2f} s  {pages} pages  {items} items")

        def timed(label: str) -> None:
            started = time.perf_counter()
            run = ingest.ingest_iam(None)
            took = time.perf_counter() - started
            assert run is not None
            rows = AuthorizationSnapshot.objects.count()
            latest = AuthorizationSnapshot.objects.order_by("-version").first()
            assert latest is not None
            size = len(json.dumps(latest.details))
            print(
                f"{label:<9} {'ingest_iam':<30} {took:>7.2f} s  ratio {took / base:.2f}  {run.pages} pages  "
                f"snapshot rows {rows}  {size / 1e6:.1f} MB JSON  changes {run.changes}"
            )

        timed("ingest")
        timed("rerun")
        iam.put_role_policy(RoleName="role-0", PolicyName="inline", PolicyDocument=json.dumps({**DOC, "Id": "v2"}))
        timed("change")
        print("change list:", list(AuthorizationChange.objects.values_list("kind", "arn", "change")))
    finally:
        server.stop()
        from django.db import connections

        connections.close_all()
        recreate_pg_database(args.database_url, drop_only=True)


if __name__ == "__main__":
    main()
