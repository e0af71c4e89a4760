"""Shared fixtures. Each area keeps its own fixtures in its own conftest or test module."""

from __future__ import annotations

import json
import urllib.request

import pytest

from emulator.server import EmulatorServer


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # For speed: tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True, scope="session")
def _static_files_without_collectstatic():
    # Production names static files from the manifest `collectstatic` writes; the suite renders
    # templates without collecting first, so {% static %} gives plain names here and whitenoise
    # reads the source folders. tests/test_serving.py collects and checks the production setup.
    from django.test.utils import override_settings

    storages = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(STORAGES=storages, WHITENOISE_AUTOREFRESH=True, WHITENOISE_USE_FINDERS=True):
        yield


class Emulator:
    """Handle on the AWS emulator that the test's boto3 clients reach over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url

    def control(self, path: str, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}/_kmsdash/{path}", data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def fault(self, target: str, error: str = "ThrottlingException", *, status: int = 400, count: int = 1,
              delay: float = 0.0) -> None:
        self.control("faults", {"target": target, "error": error, "status": status, "count": count, "delay": delay})

    def requests(self, target: str | None = None) -> list[dict]:
        seen = self.control("requests")
        return [r for r in seen if target is None or r["target"].endswith(target)]

    def reset(self) -> None:
        self.control("reset", {})


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
