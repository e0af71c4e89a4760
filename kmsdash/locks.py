"""Named run locks that die with their holder.

On PostgreSQL a session-level advisory lock on the default connection: a killed worker's
connection closes and the server releases the lock. On SQLite (single host) an flock on a file
under KMSDASH_LOCK_DIR: the kernel releases it when the process dies. No TTLs, no stale locks.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextmanager
def run_lock(name: str) -> Iterator[bool]:
    """Yield True if this process now holds the lock `name`, False if someone else does."""
    if connections[DEFAULT_DB_ALIAS].vendor == "postgresql":
        with _advisory_lock(name) as acquired:
            yield acquired
    else:
        with _file_lock(name) as acquired:
            yield acquired


@contextmanager
def _advisory_lock(name: str) -> Iterator[bool]:
    key = lock_key(name)
    connection = connections[DEFAULT_DB_ALIAS]  # this thread's connection
    # PostgreSQL lets a session take its own advisory lock again; a run lock must not.
    held = connection.__dict__.setdefault("kmsdash_run_locks", set())
    if key in held:
        yield False
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        acquired = bool(cursor.fetchone()[0])
    if acquired:
        held.add(key)
    try:
        yield acquired
    finally:
        if acquired:
            held.discard(key)
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            except DatabaseError:
                # The connection is gone, and the lock went with it.
                pass


def _lock_path(name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100]
    digest = hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
    return Path(settings.KMSDASH_LOCK_DIR) / f"{safe}.{digest}.lock"


@contextmanager
def _file_lock(name: str) -> Iterator[bool]:
    path = _lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file stays: unlinking a lock file lets two processes lock two different inodes.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
