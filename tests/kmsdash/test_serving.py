"""The production server as `make run` and a deployment start it: gunicorn with gunicorn.conf.py on
kmsdash.wsgi, after collectstatic, on 127.0.0.1 and a free port."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # collectstatic and gunicorn in subprocesses

ROOT = Path(__file__).resolve().parent.parent.parent
# Not a real secret: a key of the length `check --deploy` asks for, for these tests only.
TEST_KEY = "t3st-0nly-serving-5c1d9e8f7a6b5c4d3e2f1a0b9c8d7e6f-QwErTyUiOpAsDfGh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(tmp: Path, **extra: str) -> dict[str, str]:
    """A production-like environment of its own: none of this test run's KMSDASH_ or DJANGO_ settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KMSDASH_", "DJANGO_"))}
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    env.update(
        DJANGO_SETTINGS_MODULE="kmsdash.settings",
        KMSDASH_VAR_DIR=str(tmp / "var"),
        KMSDASH_STATIC_ROOT=str(tmp / "static"),
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        KMSDASH_WEB_WORKERS="1",
        KMSDASH_WEB_THREADS="2",
        **extra,
    )
    return env


def gunicorn(env: dict[str, str], port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "kmsdash.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    return output


class Server:
    def __init__(self, url: str, port: int) -> None:
        self.url, self.port = url, port

    def get(self, path: str, **headers: str):
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def raw(self, head: bytes) -> tuple[str, float]:
        """Sends `head` as the request as it is; the status line and how long it took to come."""
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            try:
                sock.sendall(head)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer and close before reading all of an oversized request
            status = sock.makefile("rb").readline().decode("latin-1").strip()
        return status, time.monotonic() - started


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    (tmp / "var/broker").mkdir(parents=True)
    env = environment(tmp, KMSDASH_SECRET_KEY=TEST_KEY)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    port = free_port()
    process = gunicorn(env, port)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url + "/accounts/login/", timeout=5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("gunicorn did not start:\n" + stop(process))
            time.sleep(0.3)
    yield Server(url, port)
    stop(process)


def test_an_oversized_cookie_header_is_refused_with_431_before_django_parses_it(server):
    # 60 KB of backslashes in a quoted cookie: ten seconds of CPU for an unpatched http.cookies.
    cookie = 'c="' + "\\" * 60_000 + '"'
    status, took = server.raw(f"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode())
    assert status.startswith("HTTP/1.1 431"), status
    assert took < 5


def test_a_large_cookie_split_over_many_header_fields_is_refused_too(server):
    # gunicorn joins repeated fields into one value, so the number of fields is capped as well.
    backslashes = "\\" * 4000
    fields = "".join(f'Cookie: c{i}="{backslashes}"\r\n' for i in range(40))
    status, took = server.raw(f"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n{fields}\r\n".encode())
    assert status.startswith("HTTP/1.1 431"), status
    assert took < 5


def test_a_large_cookie_in_as_many_fields_as_gunicorn_allows_is_refused_before_django_parses_it(server):
    # 30 fields of 8,000 backslashes each pass gunicorn's limits, and gunicorn joins them into one
    # 240 KB value: 16 times the 60 KB cookie's 10 s for an unpatched http.cookies (2 minutes).
    backslashes = "\\" * 8000
    fields = "".join(f'Cookie: c{i}="{backslashes}"\r\n' for i in range(30))
    status, took = server.raw(f"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n{fields}\r\n".encode())
    assert status.startswith("HTTP/1.1 431"), status
    assert took < 5


def test_an_oversized_request_line_is_refused(server):
    status, _ = server.raw(f"GET /?q={'a' * 5000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert status.startswith("HTTP/1.1 414"), status


def test_an_ordinary_cookie_still_reaches_the_application(server):
    status, _, body = server.get("/accounts/login/", Cookie='theme="a\\\\b"; other=1')
    assert status == 200 and b"<form" in body


def test_pages_link_static_files_by_content_hash_and_those_are_cached_for_a_year_compressed(server):
    _, _, page = server.get("/accounts/login/")
    css = re.search(rb'href="(/static/kmsdash/app\.[0-9a-f]{12}\.css)"', page)
    assert css, page[:500]
    status, headers, body = server.get(css.group(1).decode(), **{"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Cache-Control"] == "max-age=315360000, public, immutable"
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == (ROOT / "static/kmsdash/app.css").read_bytes()


def test_healthz_answers_through_gunicorn(server):
    status, headers, body = server.get("/healthz")
    assert (status, json.loads(body)) == (200, {"database": "ok", "broker": "ok"})


def test_forwarding_headers_from_a_client_are_not_trusted_by_gunicorn_itself(server):
    # KMSDASH_BEHIND_TLS_PROXY alone decides (Django's SECURE_PROXY_SSL_HEADER); it is off here,
    # so a client claiming https gets no secure cookie.
    _, headers, _ = server.get("/accounts/login/", **{"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "on"})
    assert "csrftoken" in headers["Set-Cookie"] and "Secure" not in headers["Set-Cookie"]


def test_gunicorn_refuses_to_start_with_the_public_development_key(tmp_path):
    process = gunicorn(environment(tmp_path), free_port())
    try:
        process.wait(timeout=90)
    finally:
        output = stop(process)
    assert process.returncode != 0
    assert "public development key" in output and "KMSDASH_SECRET_KEY" in output


@pytest.mark.parametrize(
    ("extra", "starts"),
    [
        ({}, False),
        ({"KMSDASH_DEMO": "True"}, True),
        ({"KMSDASH_DEBUG": "True"}, True),
        ({"KMSDASH_SECRET_KEY": TEST_KEY}, True),
    ],
    ids=["production", "demo", "debug", "own-key"],
)
def test_the_wsgi_application_refuses_the_development_key_outside_the_demo_and_debug(tmp_path, extra, starts):
    result = subprocess.run(
        [sys.executable, "-c", "import kmsdash.wsgi"],
        cwd=ROOT,
        env=environment(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode == 0) == starts, result.stderr[-2000:]
    if not starts:
        assert "ImproperlyConfigured" in result.stderr and "KMSDASH_SECRET_KEY" in result.stderr
