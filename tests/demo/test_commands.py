"""The demo commands: seed_demo (emulator, Sources, one user per role) and the live traffic of a running demo."""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from audits.models import Source
from demo.activity import ACCOUNTS, REGIONS
from demo.seed import EXTERNAL_ID, Emulator, find_keys, push_live, reader_role_arn, seed_world, trail_bucket
from inventory.models import Finding

pytestmark = pytest.mark.emulator


@pytest.mark.django_db
def test_seed_demo_registers_the_sources_and_creates_one_user_per_role(aws, settings, tmp_path, monkeypatch):
    settings.KMSDASH_DEMO = True
    settings.KMSDASH_SECRETS_KMS_KEY = "alias/kmsdash-channel-secrets"  # as scripts/run.sh sets it
    credentials = tmp_path / "credentials.txt"
    # The passwords are never in a file others may read, not even before a chmod: the mode the file
    # has at the moment they are written, under the usual umask.
    modes_when_written = []
    write_text = Path.write_text

    def recording_write_text(path, *args, **kwargs):
        if path == credentials:
            modes_when_written.append(stat.S_IMODE(path.stat().st_mode) if path.exists() else None)
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", recording_write_text)
    out = io.StringIO()
    previous_umask = os.umask(0o022)
    try:
        call_command(
            "seed_demo",
            "--endpoint",
            aws.url,
            "--days",
            "2",
            "--events-per-day",
            "60",
            "--credentials-file",
            str(credentials),
            stdout=out,
        )
    finally:
        os.umask(previous_umask)
    assert modes_when_written == [0o600]
    assert "Seeded 20 keys" in out.getvalue()
    sources = {s.account_id: s for s in Source.objects.all()}
    assert set(sources) == set(ACCOUNTS)
    for account, source in sources.items():
        assert source.role_arn == reader_role_arn(account)
        assert source.external_id == EXTERNAL_ID
        assert source.s3_bucket == trail_bucket(account)
        assert sorted(source.regions) == sorted(REGIONS)
    from notify.models import Channel

    demo_channel = Channel.objects.get()  # alerts are written to a log file under the demo's var/
    assert (demo_channel.name, demo_channel.type, demo_channel.target) == (
        "demo-log",
        "file",
        str(settings.VAR_DIR / "alerts.log"),
    )
    # The key that seals channel secrets exists in the emulator's KMS: a demo webhook can be added.
    call_command("add_alert_channel", "hook", "--webhook", "https://hooks.example.com/", stdout=io.StringIO())
    assert Channel.objects.get(name="hook").secret_source().startswith("encrypted with arn:aws:kms:us-east-1:")
    users = get_user_model().objects.all()
    assert {u.username: sorted(u.groups.values_list("name", flat=True)) for u in users} == {
        "analyst": ["analyst"],
        "finance": ["finance"],
        "admin": ["admin"],
    }
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    for line in credentials.read_text().splitlines():
        username, password = line.split()[:2]
        assert get_user_model().objects.get(username=username).check_password(password)


@pytest.mark.django_db
def test_seed_demo_refuses_to_run_outside_demo_mode(aws, settings):
    settings.KMSDASH_DEMO = False
    with pytest.raises(CommandError, match="KMSDASH_DEMO"):
        call_command("seed_demo", "--endpoint", aws.url, stdout=io.StringIO())
    assert [r for r in aws.requests() if "moto-api" not in r["target"]] == []


@pytest.mark.django_db
def test_seed_demo_refuses_an_endpoint_that_is_not_the_emulator(settings, unused_tcp_port):
    settings.KMSDASH_DEMO = True
    with pytest.raises(CommandError, match="emulator"):
        call_command("seed_demo", "--endpoint", f"http://127.0.0.1:{unused_tcp_port}", stdout=io.StringIO())
    assert not Source.objects.exists()


@pytest.fixture
def unused_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_running_demo_gets_new_ordinary_traffic_for_the_time_that_passed(aws):
    world = seed_world(aws.url, days=1, events_per_day=100)
    emulator = Emulator(aws.url)
    keys = find_keys(emulator)
    assert sorted(keys, key=lambda k: k.arn) == sorted(world.keys, key=lambda k: k.arn)

    def log_objects() -> dict[tuple[str, str], str]:
        return {
            (account, item["Key"]): item["Key"]
            for account in ACCOUNTS
            for page in emulator.client("s3", account)
            .get_paginator("list_objects_v2")
            .paginate(Bucket=trail_bucket(account), Prefix=f"AWSLogs/{account}/CloudTrail/")
            for item in page.get("Contents", [])
        }

    before = log_objects()
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(hours=1)
    delivered = push_live(emulator, keys, start=start, end=end, events_per_day=20000)
    assert delivered > 0

    new_records = []
    for account, key in set(log_objects()) - set(before):
        body = emulator.client("s3", account).get_object(Bucket=trail_bucket(account), Key=key)["Body"].read()
        records = json.loads(gzip.decompress(body))["Records"]
        new_records += [r for r in records if r["eventSource"] == "kms.amazonaws.com"]
    assert len(new_records) == delivered
    window = (f"{start:%Y-%m-%dT%H:%M:%SZ}", f"{end:%Y-%m-%dT%H:%M:%SZ}")
    assert all(window[0] <= r["eventTime"] < window[1] for r in new_records)
    # Ordinary traffic only: no key-management story, nothing on the disabled or deleted keys.
    assert not {r["eventName"] for r in new_records} & {"DisableKey", "ScheduleKeyDeletion", "CreateKey"}
    retired = {k.arn for k in keys if k.spec.state != "Enabled"}
    assert not [r for r in new_records if r.get("resources") and r["resources"][0]["ARN"] in retired]


@pytest.mark.django_db
def test_the_demo_world_raises_every_finding_kind_once_ingested(aws, settings):
    """The same steps as `make run`: seed, ingest the trail's S3 files, read the inventory."""
    settings.KMSDASH_DEMO = True
    settings.KMSDASH_S3_INITIAL_DAYS = 12
    call_command(
        "seed_demo",
        "--endpoint",
        aws.url,
        "--days",
        "10",
        "--events-per-day",
        "200",
        "--no-users",
        stdout=io.StringIO(),
    )
    call_command("ingest_cloudtrail", "--source", "s3", stdout=io.StringIO())
    call_command("ingest_keys", stdout=io.StringIO())

    found = set(Finding.objects.values_list("kind", "key"))
    arn = {key.spec.alias: key.arn for key in find_keys(Emulator(aws.url))}
    assert {
        ("policy-public", arn["data-eu-pipeline"]),
        ("policy-wildcard-actions", arn["prod-eu-lambda"]),
        ("policy-cross-account", arn["prod-invoices-s3"]),
        ("grant-cross-account", arn["prod-apac-backup"]),
        ("pending-deletion-in-use", arn["data-old-migration"]),
        ("disabled-key-in-use", arn["prod-legacy-reports"]),
        ("unused-key", arn["data-eu-archive-2023"]),
        ("encryption-context-violation", arn["prod-payments-app"]),
        ("rotation-disabled", arn["prod-ebs"]),
    } <= found
    assert "trail-excludes-kms" in {kind for kind, _ in found}
    # Nothing unintended: only the story keys are unused or in use while disabled or deleted.
    # (and the lifecycle stories' safe-to-schedule primary, demo/lifecycle.py: unused past the 90 days)
    from inventory.models import Alias

    legacy = Alias.objects.get(name="alias/prod-global-legacy").key.arn
    assert {key for kind, key in found if kind == "unused-key"} == {arn["data-eu-archive-2023"], legacy}
