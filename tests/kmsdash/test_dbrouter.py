"""DATABASE_REPLICA_URL: the pages read the data apps from the replica; everything else uses the primary."""

from __future__ import annotations

import warnings

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alerts.models import Alert
from audits import selectors
from audits.models import Checkpoint, Event, IngestRun
from costs.models import CostRecord
from inventory.models import Key
from kmsdash.dbrouter import REPLICA, ReplicaRouter, page_reads
from kmsdash.models import ExportAudit
from kmsdash.roles import ADMIN
from notify.models import Notification
from tests.support import make_user

DATA_MODELS = [Event, IngestRun, Checkpoint, CostRecord, Key, Alert, Notification]
PRIMARY_ONLY = [User, Session, ExportAudit]


@pytest.fixture
def with_replica(settings):
    """A `replica` alias: the settings DATABASE_REPLICA_URL gives, here a second connection to the same database."""
    # Django warns that overriding DATABASES does not reconnect: only the router reads it here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        settings.DATABASES = {**settings.DATABASES, REPLICA: {**settings.DATABASES["default"]}}
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        settings.DATABASES = {k: v for k, v in settings.DATABASES.items() if k != REPLICA}


@pytest.fixture
def replica_connection(transactional_db, with_replica):
    """The `replica` alias as a second real connection to the test database (transactional: it sees
    committed rows only). Made after the test case's set-up, which refuses aliases it was not told
    about: the connection is created from a short-lived entry in the connection settings."""
    connections.settings[REPLICA] = {**connections["default"].settings_dict}
    try:
        replica = connections[REPLICA]
    finally:
        del connections.settings[REPLICA]
    yield replica
    replica.close()
    del connections[REPLICA]


def test_without_a_replica_every_read_goes_to_the_primary():
    router = ReplicaRouter()
    with page_reads():
        assert {router.db_for_read(model) for model in DATA_MODELS + PRIMARY_ONLY} == {"default"}


def test_page_reads_of_the_data_apps_go_to_the_replica(with_replica):
    router = ReplicaRouter()
    with page_reads():
        assert {router.db_for_read(model) for model in DATA_MODELS} == {REPLICA}


def test_sign_in_and_audit_tables_are_read_from_the_primary_even_in_a_page(with_replica):
    router = ReplicaRouter()
    with page_reads():
        assert {router.db_for_read(model) for model in PRIMARY_ONLY} == {"default"}


def test_reads_outside_a_page_request_go_to_the_primary(with_replica):
    # Celery tasks, beat and commands: ingestion reads its checkpoints where it writes them.
    router = ReplicaRouter()
    assert {router.db_for_read(model) for model in DATA_MODELS} == {"default"}


def test_writes_always_go_to_the_primary(with_replica):
    router = ReplicaRouter()
    with page_reads():
        assert {router.db_for_write(model) for model in DATA_MODELS + PRIMARY_ONLY} == {"default"}


def test_migrations_run_only_on_the_primary(with_replica):
    router = ReplicaRouter()
    for app_label in ("audits", "auth", "sessions", "django_celery_beat"):
        assert router.allow_migrate("default", app_label) is True
        assert router.allow_migrate(REPLICA, app_label) is False


def queried_tables(context: CaptureQueriesContext) -> str:
    return " ".join(query["sql"] for query in context.captured_queries)


def test_a_page_reads_its_data_from_the_replica_and_the_session_from_the_primary(client, replica_connection):
    IngestRun.objects.create(kind="s3", account_id="111122223333", region="eu-west-1", status="succeeded")
    client.force_login(make_user("admin", ADMIN))
    with CaptureQueriesContext(connections["default"]) as primary, CaptureQueriesContext(replica_connection) as replica:
        response = client.get(reverse("health"))
    assert response.status_code == 200
    assert b"111122223333" in response.content  # read through the replica connection
    assert "audits_ingestrun" in queried_tables(replica)
    assert "django_session" not in queried_tables(replica) and "auth_user" not in queried_tables(replica)
    assert "django_session" in queried_tables(primary)
    assert "audits_ingestrun" not in queried_tables(primary)


def test_a_post_reads_from_the_primary(client, replica_connection):
    client.force_login(make_user("admin", ADMIN))
    with CaptureQueriesContext(replica_connection) as replica:
        client.post(reverse("health"))
    assert not [q for q in replica.captured_queries if "SET statement_timeout" not in q["sql"]]


def test_ingestion_health_outside_a_request_reads_the_primary(replica_connection):
    IngestRun.objects.create(kind="s3", account_id="111122223333", region="eu-west-1", status="succeeded")
    with CaptureQueriesContext(replica_connection) as replica:
        assert [scope.account_id for scope in selectors.ingestion_health()] == ["111122223333"]
    assert not replica.captured_queries


def test_database_replica_url_adds_a_replica_alias_mirrored_in_tests():
    import os
    import subprocess
    import sys

    code = "from django.conf import settings as s; r = s.DATABASES['replica']; print(r['NAME'], r['TEST']['MIRROR'])"
    env = {**os.environ, "DATABASE_REPLICA_URL": "postgres://reader@replica.internal:5432/kmsdash"}
    env["DJANGO_SETTINGS_MODULE"] = "kmsdash.settings"
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == ["kmsdash", "default"]
