"""The seed_demo command: the emulator seeded, the Sources registered, one demo user per role."""

from __future__ import annotations

import io
import socket
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from audits.models import Source
from demo.activity import ACCOUNTS, REGIONS
from demo.seed import EXTERNAL_ID, reader_role_arn, trail_bucket

pytestmark = pytest.mark.emulator


@pytest.mark.django_db
def test_seed_demo_registers_the_sources_and_creates_one_user_per_role(aws, settings, tmp_path):
    settings.KMSDASH_DEMO = True
    credentials = tmp_path / "credentials.txt"
    out = io.StringIO()
    call_command("seed_demo", "--endpoint", aws.url, "--days", "2", "--events-per-day", "60",
                 "--credentials-file", str(credentials), stdout=out)
    assert "Seeded 20 keys" in out.getvalue()
    sources = {s.account_id: s for s in Source.objects.all()}
    assert set(sources) == set(ACCOUNTS)
    for account, source in sources.items():
        assert source.role_arn == reader_role_arn(account)
        assert source.external_id == EXTERNAL_ID
        assert source.s3_bucket == trail_bucket(account)
        assert sorted(source.regions) == sorted(REGIONS)
    users = get_user_model().objects.all()
    assert {u.username: sorted(u.groups.values_list("name", flat=True)) for u in users} == {
        "analyst": ["analyst"], "finance": ["finance"], "admin": ["admin"],
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
