"""Data, users and fixtures for the analysts' pages tests (loaded by them as a pytest plugin).

Records go through the real ingestion path. Fixture names carry a prefix because a plugin's
fixtures are visible to the whole session.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group, User

from audits import synthetic
from audits.ingest import finish_run, ingest_records, start_run
from audits.models import IngestRun

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
A, B = "111122223333", "444455556666"
K1 = f"arn:aws:kms:us-east-1:{A}:key/11111111-1111-4111-8111-111111111111"
K2 = f"arn:aws:kms:eu-west-1:{A}:key/22222222-2222-4222-8222-222222222222"
K3 = f"arn:aws:kms:us-east-1:{B}:key/33333333-3333-4333-8333-333333333333"

HOSTILE_UA = "<img src=x onerror=alert(1)>"
HOSTILE_ERROR = "</script><script>alert(1)</script>"
RLO = "\u202e"
HOSTILE_ROLE = f"evil{RLO}txt.exe"


def ingest(records, *, status=IngestRun.Status.SUCCEEDED) -> IngestRun:
    run = start_run(IngestRun.Kind.FILES)
    counts = ingest_records(list(records), run=run)
    return finish_run(run, counts, status=status)


def record(name="Decrypt", *, when=None, key=K1, account=A, region="us-east-1", role="app", session="s1", **extra):
    return synthetic.kms_record(
        event_name=name,
        event_time=when or NOW - timedelta(hours=1),
        key_arn=key,
        identity=extra.pop("identity", None) or synthetic.identity_role(account, role, session),
        region=region,
        recipient_account_id=account,
        **extra,
    )


def volume(n=400, seed=7):
    """Synthetic traffic over the ten days before NOW."""
    return list(synthetic.generate_records(n, seed=seed, start=NOW - timedelta(days=10), days=10))


@pytest.fixture
def pages_now():
    with time_machine.travel(NOW, tick=False):
        yield NOW


def make_user(username: str, *groups: str) -> User:
    user = User.objects.create_user(username, password="x")
    for name in groups:
        # A transactional test run before on the same worker flushes the groups the migration made.
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


@pytest.fixture
def pages_analyst(client):
    client.force_login(make_user("ana", "analyst"))
    return client
