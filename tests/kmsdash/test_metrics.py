"""/metrics: Prometheus text for the operations team, behind a bearer token, read from the database."""

from __future__ import annotations

import os
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from audits.models import Checkpoint, IngestRun
from kmsdash import metrics
from kmsdash.celery import app as celery_app
from notify.models import Channel, DeliveryAttempt, Notification

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def enabled(settings):
    settings.KMSDASH_METRICS_TOKEN = TOKEN


@pytest.fixture
def use_broker():
    """use_broker(url, transport options): the broker this test's scrapes read, restored after."""
    saved = (celery_app.conf.broker_url, celery_app.conf.broker_transport_options)

    def use(url: str, options: dict) -> None:
        celery_app.conf.broker_url = url
        celery_app.conf.broker_transport_options = options

    yield use
    use(*saved)


@pytest.fixture
def file_broker(tmp_path, use_broker):
    """Celery's filesystem broker in a folder of this test's own."""
    folder = tmp_path / "broker"
    folder.mkdir()
    use_broker(
        "filesystem://",
        {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(tmp_path)},
    )
    return folder


def scrape(client) -> dict[str, dict[tuple, float]]:
    """{family name: {sorted label items: value}} from the response, through prometheus_client's parser."""
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families


def put(url: str, options: dict, queue: str, count: int) -> None:
    with Connection(url, transport_options=options) as conn:
        simple = conn.SimpleQueue(queue)
        for n in range(count):
            simple.put({"n": n})
        simple.close()


def test_the_url_is_named_metrics():
    assert reverse("metrics") == "/metrics"


def test_without_a_configured_token_the_endpoint_does_not_exist(client, settings):
    settings.KMSDASH_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer"],
)
def test_a_missing_or_wrong_token_is_refused_without_a_login_redirect(client, enabled, header):
    headers = {"Authorization": header} if header is not None else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"kmsdash_" not in response.content and not response.has_header("Location")


def test_the_token_may_come_from_a_mounted_file(tmp_path, monkeypatch):
    from kmsdash import settings as project_settings

    (tmp_path / "token").write_text(TOKEN + "\n")
    monkeypatch.delenv("KMSDASH_METRICS_TOKEN", raising=False)
    monkeypatch.setenv("KMSDASH_METRICS_TOKEN_FILE", str(tmp_path / "token"))
    assert project_settings.read_secret("KMSDASH_METRICS_TOKEN") == TOKEN


def test_counters_come_from_the_run_ledger_so_they_survive_a_restart(client, enabled, file_broker):
    # Rows written directly, as by other processes before this one started: nothing counted in memory.
    for kind, status, new, bad in [
        ("s3", "succeeded", 1200, 2),
        ("s3", "succeeded", 300, 0),
        ("s3", "failed", 0, 1),
        ("lookup", "succeeded", 50, 0),
        ("lookup", "skipped", 0, 0),
        ("lookup", "running", 7, 0),
    ]:
        IngestRun.objects.create(
            kind=kind, account_id="111122223333", region="eu-west-1", status=status, events_new=new, quarantined=bad
        )
    families = scrape(client)
    events = families["kmsdash_events_ingested"]
    assert events[("kmsdash_events_ingested_total", (("source", "s3"),))] == 1500
    assert events[("kmsdash_events_ingested_total", (("source", "lookup"),))] == 57
    quarantined = families["kmsdash_records_quarantined"]
    assert quarantined[("kmsdash_records_quarantined_total", (("source", "s3"),))] == 3
    runs = families["kmsdash_ingest_runs"]
    assert runs == {
        ("kmsdash_ingest_runs_total", (("source", "lookup"), ("status", "skipped"))): 1,
        ("kmsdash_ingest_runs_total", (("source", "lookup"), ("status", "succeeded"))): 1,
        ("kmsdash_ingest_runs_total", (("source", "s3"), ("status", "failed"))): 1,
        ("kmsdash_ingest_runs_total", (("source", "s3"), ("status", "succeeded"))): 2,
    }
    # A running run is not counted as a run yet (it will become succeeded or failed), but shown.
    assert families["kmsdash_ingest_runs_running"][("kmsdash_ingest_runs_running", (("source", "lookup"),))] == 1


def test_lag_is_now_minus_each_scopes_checkpoint(client, enabled, file_broker):
    now = timezone.now()
    Checkpoint.objects.create(
        kind="lookup", account_id="111122223333", region="us-east-1", high_watermark=now - timedelta(minutes=7)
    )
    Checkpoint.objects.create(
        kind="s3", account_id="444455556666", region="eu-west-1", high_watermark=now - timedelta(hours=3)
    )
    lag = scrape(client)["kmsdash_ingest_lag_seconds"]
    short = lag[
        ("kmsdash_ingest_lag_seconds", (("account", "111122223333"), ("region", "us-east-1"), ("source", "lookup")))
    ]
    long = lag[("kmsdash_ingest_lag_seconds", (("account", "444455556666"), ("region", "eu-west-1"), ("source", "s3")))]
    assert 7 * 60 <= short < 7 * 60 + 30
    assert 3 * 3600 <= long < 3 * 3600 + 30


def test_label_values_from_the_data_are_escaped_and_read_back_unchanged(client, enabled, file_broker):
    hostile = 'eu"west\\1\n# HELP fake'
    Checkpoint.objects.create(kind="s3", account_id='1"}\n', region=hostile, high_watermark=timezone.now())
    lag = scrape(client)["kmsdash_ingest_lag_seconds"]
    (labels,) = [dict(key[1]) for key in lag]
    assert labels == {"source": "s3", "account": '1"}\n', "region": hostile}


def test_alert_deliveries_by_channel_type_and_state(client, enabled, file_broker):
    hook = Channel.objects.create(name="hook", type=Channel.Type.WEBHOOK, target="https://example.com/h")
    topic = Channel.objects.create(name="topic", type=Channel.Type.SNS, target="arn:aws:sns:us-east-1:1:t")
    now = timezone.now()
    for channel, state, attempts in [
        (hook, "delivered", [False, True]),
        (hook, "pending", [False, None]),  # None: an attempt in flight has no outcome yet
        (topic, "failed", [False]),
        (topic, "suppressed", []),
    ]:
        notification = Notification.objects.create(channel=channel, alert_id=1, event="opened", payload={}, state=state)
        for number, ok in enumerate(attempts, 1):
            DeliveryAttempt.objects.create(
                notification=notification, channel=channel, number=number, started_at=now, ok=ok
            )
    families = scrape(client)
    assert families["kmsdash_alert_notifications"] == {
        ("kmsdash_alert_notifications", (("channel_type", "sns"), ("state", "failed"))): 1,
        ("kmsdash_alert_notifications", (("channel_type", "sns"), ("state", "suppressed"))): 1,
        ("kmsdash_alert_notifications", (("channel_type", "webhook"), ("state", "delivered"))): 1,
        ("kmsdash_alert_notifications", (("channel_type", "webhook"), ("state", "pending"))): 1,
    }
    assert families["kmsdash_alert_delivery_attempts"] == {
        ("kmsdash_alert_delivery_attempts_total", (("channel_type", "sns"), ("outcome", "failed"))): 1,
        ("kmsdash_alert_delivery_attempts_total", (("channel_type", "webhook"), ("outcome", "failed"))): 2,
        ("kmsdash_alert_delivery_attempts_total", (("channel_type", "webhook"), ("outcome", "succeeded"))): 1,
    }


def test_the_queue_length_of_the_filesystem_broker_counts_its_message_files(client, enabled, file_broker):
    put("filesystem://", celery_app.conf.broker_transport_options, "celery", 3)
    families = scrape(client)
    assert families["kmsdash_broker_up"] == {("kmsdash_broker_up", ()): 1}
    assert families["kmsdash_celery_queue_length"] == {("kmsdash_celery_queue_length", (("queue", "celery"),)): 3}


@pytest.fixture
def redis_url(worker_id):
    import redis

    parsed = urlparse(os.getenv("KMSDASH_E2E_REDIS_URL", "redis://127.0.0.1:6379/9"))
    number = int(parsed.path.lstrip("/") or 0) + (int(worker_id[2:]) if worker_id.startswith("gw") else 0)
    url = parsed._replace(path=f"/{number % 16}").geturl()
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url}: {exc}")
    client.flushdb()
    yield url
    client.flushdb()


def test_the_queue_length_on_redis_is_the_length_of_the_queue_list(client, enabled, redis_url, use_broker):
    use_broker(redis_url, {"visibility_timeout": 7200})
    families = scrape(client)
    # An empty queue has no list in Redis at all: still a sample, of 0.
    assert families["kmsdash_celery_queue_length"] == {("kmsdash_celery_queue_length", (("queue", "celery"),)): 0}
    put(redis_url, {}, "celery", 5)
    families = scrape(client)
    assert families["kmsdash_broker_up"] == {("kmsdash_broker_up", ()): 1}
    assert families["kmsdash_celery_queue_length"] == {("kmsdash_celery_queue_length", (("queue", "celery"),)): 5}


def test_a_broker_that_does_not_answer_gives_broker_up_0_and_no_queue_sample_not_a_500(client, enabled, use_broker):
    use_broker("redis://127.0.0.1:1/0", {})  # nothing listens on port 1
    families = scrape(client)
    assert families["kmsdash_broker_up"] == {("kmsdash_broker_up", ()): 0}
    assert families["kmsdash_celery_queue_length"] == {}
    assert "kmsdash_events_ingested" in families  # the database's figures are still there


def test_a_broker_that_hangs_costs_the_scrape_at_most_the_timeout(enabled, use_broker):
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection and never answers a byte
    try:
        use_broker(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", {})
        started = time.monotonic()
        assert metrics.queue_lengths(["celery"], timeout=0.5) is None
        assert time.monotonic() - started < 2
    finally:
        listener.close()


def test_a_scrape_reads_the_ledger_and_summaries_never_the_events_table(client, enabled, file_broker):
    IngestRun.objects.create(kind="s3", account_id="111122223333", region="eu-west-1", status="succeeded")
    with CaptureQueriesContext(connection) as queries:
        scrape(client)
    tables = " ".join(q["sql"] for q in queries.captured_queries)
    assert "audits_ingestrun" in tables
    assert '"audits_event"' not in tables and "audits_event " not in tables and "audits_rawblock" not in tables


def test_every_family_is_named_kmsdash_and_documented(client, enabled, file_broker):
    response = client.get("/metrics", headers=AUTH)
    families = list(text_string_to_metric_families(response.content.decode()))
    names = {f.name for f in families}
    assert {
        "kmsdash_ingest_lag_seconds",
        "kmsdash_events_ingested",
        "kmsdash_records_quarantined",
        "kmsdash_ingest_runs",
        "kmsdash_celery_queue_length",
        "kmsdash_broker_up",
        "kmsdash_alert_notifications",
        "kmsdash_alert_delivery_attempts",
    } <= names
    assert all(f.name.startswith("kmsdash_") and f.documentation for f in families)
    assert {f.name: f.type for f in families}["kmsdash_events_ingested"] == "counter"
