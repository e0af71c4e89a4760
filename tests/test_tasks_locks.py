"""Run locks: one holder at a time, released on exit, and released when the holder dies."""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parent.parent


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
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=holder_env(tmp_path),
                              stdout=subprocess.PIPE, text=True)
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
