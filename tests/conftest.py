"""Fixtures for the whole suite: fast password hashing, static files without collectstatic, the
run-lock folder, the AWS emulator (`aws`) and a Redis database for real Celery workers (`redis_broker`).

The tests are laid out like the code: tests/<app>/test_<topic>.py for the Django app the tested code
lives in (audits, costs, inventory, alerts, notify, kmsdash, demo), plus tests/browser (playwright),
tests/scripts (scripts/) and tests/emulator (emulator/). A folder keeps fixtures of its own in its
conftest.py and its plain helpers in its support.py; helpers every area uses (make_user, manage_py,
the Celery worker helpers) are in tests/support.py. A test module never imports another test module.

The suite runs in parallel (pytest-xdist, scripts/test.sh): each worker has its own test database
(pytest-django adds the worker id to its name), its own emulator on a free port, its own lock
folder and its own live server port, so no test sees another worker's state.
"""

from __future__ import annotations

import os
import urllib.request
from urllib.parse import urlparse

import pytest

from emulator.server import EmulatorServer
from tests.support import Emulator, worker_number


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # For speed: tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True, scope="session")
def _static_files_without_collectstatic():
    # Production names static files from the manifest `collectstatic` writes; the suite renders
    # templates without collecting first, so {% static %} gives plain names here and whitenoise
    # reads the source folders. tests/kmsdash/test_serving.py collects and checks the production setup.
    from django.test.utils import override_settings

    storages = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(STORAGES=storages, WHITENOISE_AUTOREFRESH=True, WHITENOISE_USE_FINDERS=True):
        yield


def pytest_collection_modifyitems(items):
    # `make check` runs the fast tests with -m "not emulator ...": a test that starts the emulator
    # is an emulator test whether or not its module says so.
    for item in items:
        if "aws" in getattr(item, "fixturenames", ()) and item.get_closest_marker("emulator") is None:
            item.add_marker(pytest.mark.emulator)


@pytest.fixture(autouse=True, scope="session")
def _run_locks_of_this_worker(tmp_path_factory):
    # On SQLite run locks are files under var/locks by default: shared by parallel workers (and by a
    # demo running from the same checkout), where one worker's held lock would refuse another's.
    # Each worker gets its own folder; tests that need a particular one still set it themselves.
    # (On PostgreSQL advisory locks belong to one database, and each worker has its own.)
    from django.test.utils import override_settings

    with override_settings(KMSDASH_LOCK_DIR=tmp_path_factory.mktemp("locks")):
        yield


@pytest.fixture(scope="session")
def _emulator_server():
    server = EmulatorServer().start()
    yield server
    server.stop()


@pytest.fixture
def aws(_emulator_server, monkeypatch):
    """The emulator, reset, with boto3 pointed at it through the standard environment variables."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", _emulator_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    emulator = Emulator(_emulator_server.url)
    emulator.reset()
    # moto keeps its backends per process: start every test from empty AWS accounts.
    urllib.request.urlopen(urllib.request.Request(f"{_emulator_server.url}/moto-api/reset", data=b"", method="POST"))
    yield emulator


@pytest.fixture
def redis_broker(worker_id):
    """A Redis database of this test's own for real Celery workers (KMSDASH_E2E_REDIS_URL); skips without Redis."""
    import redis

    # Parallel workers flush and use their own database numbers: KMSDASH_E2E_REDIS_URL's, plus the
    # worker's number.
    parsed = urlparse(os.getenv("KMSDASH_E2E_REDIS_URL", "redis://127.0.0.1:6379/9"))
    base = int(parsed.path.lstrip("/") or 0)
    url = parsed._replace(path=f"/{(base + worker_number(worker_id)) % 16}").geturl()
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url}: {exc}")
    client.flushdb()  # this test's own database number
    yield url
    client.flushdb()
