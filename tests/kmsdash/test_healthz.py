"""/healthz for load balancers: open without login, says only which dependency does not answer."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.urls import reverse

from kmsdash import healthz

pytestmark = pytest.mark.django_db

URL = "/healthz"


def test_the_url_is_named_healthz():
    assert reverse("healthz") == URL


def test_with_database_and_broker_answering_it_is_200_and_says_only_that(client, tmp_path, settings):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "data_folder_in": str(tmp_path),
    }
    response = client.get(URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"database": "ok", "broker": "ok"}
    assert "no-store" in response["Cache-Control"]  # a cached "ok" would hide an outage


def test_a_broker_that_does_not_answer_gives_503_naming_it_and_nothing_else(client, monkeypatch, caplog):
    monkeypatch.setitem(healthz.PROBES, "broker", broken("Error 111 connecting to redis.internal:6379"))
    response = client.get(URL)
    assert response.status_code == 503
    assert json.loads(response.content) == {"database": "ok", "broker": "unavailable"}
    assert b"redis.internal" not in response.content and b"111" not in response.content
    # The reason is for the operator, in the log.
    assert any("redis.internal" in record.error for record in caplog.records if hasattr(record, "error"))


def test_a_database_that_does_not_answer_gives_503_naming_it(client, monkeypatch):
    monkeypatch.setitem(healthz.PROBES, "database", broken("connection refused"))
    monkeypatch.setitem(healthz.PROBES, "broker", lambda: None)
    response = client.get(URL)
    assert response.status_code == 503
    assert json.loads(response.content) == {"database": "unavailable", "broker": "ok"}


def test_a_probe_that_hangs_is_unavailable_after_the_timeout_not_when_it_returns(client, monkeypatch):
    release = threading.Event()
    monkeypatch.setitem(healthz.PROBES, "database", lambda: release.wait(30))
    monkeypatch.setitem(healthz.PROBES, "broker", lambda: release.wait(30))
    started = time.monotonic()
    try:
        status = healthz.run_probes(timeout=0.3)
    finally:
        release.set()
    # Both probes ran at once: the caller waited one timeout, not one per probe.
    assert time.monotonic() - started < 0.3 * 2
    assert status == {"database": "unavailable", "broker": "unavailable"}


def test_the_database_probe_really_queries_the_database(monkeypatch):
    seen = []
    from django.db.backends.utils import CursorWrapper

    original = CursorWrapper.execute
    monkeypatch.setattr(
        CursorWrapper, "execute", lambda self, sql, params=None: seen.append(sql) or original(self, sql, params)
    )
    healthz.database()
    assert seen == ["SELECT 1"]


def test_the_file_broker_is_unavailable_when_its_queue_folder_is_missing(settings, tmp_path):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "data_folder_in": str(tmp_path / "gone"),
    }
    with pytest.raises(OSError):
        healthz.broker()


@pytest.mark.parametrize("user", ["anonymous", "signed-in"])
def test_it_needs_no_login_and_answers_htmx_requests_the_same(client, django_user_model, user, monkeypatch):
    monkeypatch.setitem(healthz.PROBES, "broker", lambda: None)
    if user == "signed-in":
        client.force_login(django_user_model.objects.create_user("someone", password="x"))
    for headers in ({}, {"HX-Request": "true"}):
        response = client.get(URL, headers=headers)
        assert response.status_code == 200 and "Location" not in response and "HX-Redirect" not in response


def test_it_is_exempt_from_the_https_redirect_so_plain_http_probes_work(client, settings, monkeypatch):
    monkeypatch.setitem(healthz.PROBES, "broker", lambda: None)
    settings.SECURE_SSL_REDIRECT = True
    assert client.get(URL).status_code == 200
    assert client.get("/accounts/login/").status_code == 301  # everything else still redirects


def test_it_only_reads(client, monkeypatch):
    monkeypatch.setitem(healthz.PROBES, "broker", lambda: None)
    assert client.post(URL).status_code == 405


def broken(message: str):
    def probe() -> None:
        raise ConnectionError(message)

    return probe
