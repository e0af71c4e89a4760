"""Run locks: one holder at a time, released on exit, and released when the holder dies."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection, connections

from kmsdash.locks import run_lock

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(autouse=True)
def _lock_dir(settings, tmp_path):
    settings.KMSDASH_LOCK_DIR = tmp_path / "locks"


def try_in_another_thread(name: str) -> bool:
    """Whether another holder (its own thread, its own database connection) would get the lock."""
    result = {}

    def attempt():
        try:
            with run_lock(name) as acquired:
                result["acquired"] = acquired
        finally:
            connections.close_all()

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return result["acquired"]


def test_a_held_lock_is_refused_to_anyone_else_until_it_is_released():
    with run_lock("lookup:111122223333:us-east-1") as acquired:
        assert acquired
        assert try_in_another_thread("lookup:111122223333:us-east-1") is False
        assert try_in_another_thread("lookup:111122223333:eu-west-1") is True
    assert try_in_another_thread("lookup:111122223333:us-east-1") is True


def test_a_lock_is_released_when_the_block_raises():
    with pytest.raises(RuntimeError), run_lock("s3:111122223333:us-east-1"):
        raise RuntimeError("boom")
    assert try_in_another_thread("s3:111122223333:us-east-1") is True


def holder_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, KMSDASH_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="kmsdash.settings")
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    return env


def test_a_lock_dies_with_the_process_that_held_it(tmp_path, settings):
    settings.KMSDASH_LOCK_DIR = tmp_path / "locks"  # where the holder's KMSDASH_VAR_DIR puts it
    script = (
        "import django, sys, time; django.setup()\n"
        "from kmsdash.locks import run_lock\n"
        "with run_lock('lookup:444455556666:us-east-1') as acquired:\n"
        "    print('held' if acquired else 'refused', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=holder_env(tmp_path), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert try_in_another_thread("lookup:444455556666:us-east-1") is False
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        # The server (or the kernel) notices the dead holder at once, or very nearly.
        for _ in range(50):
            if try_in_another_thread("lookup:444455556666:us-east-1"):
                break
            threading.Event().wait(0.1)
        else:
            pytest.fail("the lock outlived its holder")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_the_same_holder_cannot_take_its_own_lock_twice():
    with run_lock("lookup:111122223333:us-east-1") as outer, run_lock("lookup:111122223333:us-east-1") as inner:
        assert (outer, inner) == (True, False)
    assert try_in_another_thread("lookup:111122223333:us-east-1") is True


# Every operation that must not overlap takes its own lock, so a command, a task and the demo are
# equally safe: while one caller holds it, a second is refused at once and does nothing.


def test_a_second_inventory_read_of_the_same_scope_is_skipped():
    from audits.models import Source
    from inventory import services
    from inventory.models import InventoryRun

    source = Source.objects.create(account_id="111122223333", regions=["us-east-1"])
    with run_lock("inventory:111122223333:us-east-1"):
        assert services.ingest_keys(source, "us-east-1") is None
        with run_lock("inventory:default:eu-west-1"):
            assert services.ingest_keys(None, "eu-west-1") is None
    assert not InventoryRun.objects.exists()


def test_the_ingest_keys_command_skips_a_scope_being_read_and_a_findings_recompute_under_way():
    from io import StringIO

    from django.core.management import call_command

    from audits.models import Source

    Source.objects.create(account_id="111122223333", regions=["us-east-1"])
    out, err = StringIO(), StringIO()
    with run_lock("inventory:111122223333:us-east-1"), run_lock("inventory:findings"):
        call_command("ingest_keys", stdout=out, stderr=err)
    assert "inventory:111122223333:us-east-1: already running, skipped" in err.getvalue()
    assert "findings: another recompute is running, skipped" in err.getvalue()
    assert out.getvalue() == ""


def test_a_second_findings_recompute_is_refused_and_the_task_tries_again_later(monkeypatch):
    from django.core.management import call_command

    from inventory import findings, tasks
    from inventory.models import Finding

    later = []
    monkeypatch.setattr(tasks.recompute_findings, "apply_async", lambda **options: later.append(options))
    with run_lock("inventory:findings"):
        assert findings.recompute() is None
        tasks.recompute_findings()
        call_command("findings", "--recompute", stdout=io.StringIO(), stderr=(err := io.StringIO()))
    assert later == [{"countdown": 60}]
    assert "Another recompute is running" in err.getvalue()
    assert not Finding.objects.exists()
    assert findings.recompute() is not None  # free again


def test_a_second_retention_purge_is_skipped_by_the_service_the_command_and_the_task(settings):
    from django.core.management import call_command

    from audits import retention
    from audits.models import Retention
    from audits.tasks import purge_events

    settings.KMSDASH_EVENT_RETENTION_DAYS = 30
    with run_lock(retention.PURGE_LOCK):
        result = retention.purge_events()
        assert result.skipped and result.events == 0
        out = io.StringIO()
        call_command("purge_events", stdout=out)
        assert "Another purge is running: nothing done." in out.getvalue()
        assert purge_events.apply().get() == 0
        assert not retention.purge_events(dry_run=True).skipped  # a dry run only counts
    assert not Retention.objects.exists()
    assert not retention.purge_events().skipped
    assert Retention.objects.exists()
