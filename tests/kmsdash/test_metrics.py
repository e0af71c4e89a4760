"""/metrics: Prometheus text for the operations team, behind a bearer token, read from the database."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.db.models import Count, Sum
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from audits.ingest import Counts, Ingestor, finish_run, ingest_records, ingest_run, start_run
from audits.models import Checkpoint, Event, IngestRun
from audits.selectors import ingestion_health
from audits.services import close_interrupted_runs
from audits.synthetic import generate_records
from kmsdash import metrics, totals
from kmsdash.celery import app as celery_app
from kmsdash.models import Total
from notify.delivery import deliver_pending
from notify.models import Channel, DeliveryAttempt, Notification
from notify.services import notify_alert
from tests.notify.support import Receiver, make_alert

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


# --- counters: running totals kept by the ledgers' writers (kmsdash/totals.py) --------------------

A, B = "111122223333", "444455556666"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def sample(families: dict, family: str, **labels: str) -> float | None:
    """The value of `family`'s sample with exactly these labels, None when there is none."""
    found = [value for (_, items), value in families[family].items() if dict(items) == labels]
    assert len(found) <= 1
    return found[0] if found else None


def runs_figures(families: dict, kind: str) -> dict[str, float | None]:
    return {
        "events": sample(families, "kmsdash_events_ingested", source=kind),
        "quarantined": sample(families, "kmsdash_records_quarantined", source=kind),
        "running": sample(families, "kmsdash_ingest_runs_running", source=kind),
        **{
            status: sample(families, "kmsdash_ingest_runs", source=kind, status=status)
            for status in ("succeeded", "failed")
        },
    }


def ledger_figures(kind: str) -> dict[str, int | None]:
    """The same figures aggregated from the run ledger, as /metrics computed them before totals."""
    runs = IngestRun.objects.filter(kind=kind)
    by_status = dict(runs.values("status").annotate(n=Count("id")).values_list("status", "n"))
    return {
        "events": runs.aggregate(n=Sum("events_new", default=0))["n"],
        "quarantined": runs.aggregate(n=Sum("quarantined", default=0))["n"],
        "running": by_status.get("running", 0),
        "succeeded": by_status.get("succeeded"),
        "failed": by_status.get("failed"),
    }


def assert_totals_are_the_ledgers() -> None:
    assert totals.read() == totals.from_ledgers()


def kms(n: int, seed: int) -> list[dict]:
    return list(generate_records(n, seed=seed, start=T0, days=2))


def test_each_batch_counts_its_new_events_and_quarantined_records_as_it_commits(client, enabled, file_broker):
    run = start_run("s3", account_id=A, region="eu-west-1")
    ingestor = Ingestor(run, batch_size=50)
    records = kms(120, seed=1)
    for record in records + ["not json", "{also not json", "[]"]:
        ingestor.add(record)
    ingestor.flush()
    # Mid-run: the committed batches are counted before the run ends.
    families = scrape(client)
    assert runs_figures(families, "s3") == {
        "events": 120,
        "quarantined": 3,
        "running": 1,
        "succeeded": None,
        "failed": None,
    }
    assert runs_figures(families, "s3") == ledger_figures("s3")

    # The same records again: duplicates and re-quarantined records add nothing.
    for record in records + ["not json", "{also not json", "[]"]:
        ingestor.add(record)
    ingestor.flush()
    finish_run(run, ingestor.counts)
    families = scrape(client)
    assert runs_figures(families, "s3") == {
        "events": 120,
        "quarantined": 3,
        "running": 0,
        "succeeded": 1,
        "failed": None,
    }
    assert runs_figures(families, "s3") == ledger_figures("s3")
    assert runs_figures(families, "lookup") == {
        "events": 0,
        "quarantined": 0,
        "running": 0,
        "succeeded": None,
        "failed": None,
    }
    assert_totals_are_the_ledgers()


def test_a_batch_retried_after_a_deadlock_is_counted_once(monkeypatch):
    real = totals.add_many
    batches = []

    def deadlock_once(amounts):
        real(amounts)
        if totals.key(totals.EVENTS, source="lookup") in amounts and not batches:
            batches.append(amounts)
            # After the totals were added: the whole batch must roll back with them.
            raise OperationalError("deadlock detected")

    run = start_run("lookup", account_id=A, region="us-east-1")
    monkeypatch.setattr(totals, "add_many", deadlock_once)
    counts = ingest_records([*kms(40, seed=2), "not json"], run=run)
    finish_run(run, counts)
    assert batches and counts.events_new == 40
    assert totals.read()[totals.key(totals.EVENTS, source="lookup")] == 40
    assert totals.read()[totals.key(totals.QUARANTINED, source="lookup")] == 1
    assert_totals_are_the_ledgers()


def test_runs_count_as_running_until_they_succeed_or_fail_keeping_what_their_batches_committed(
    client, enabled, file_broker
):
    with ingest_run("lookup", account_id=A, region="us-east-1") as run:
        run.ingestor.add(kms(1, seed=3)[0])
        run.ingestor.flush()
        assert runs_figures(scrape(client), "lookup")["running"] == 1
    with pytest.raises(RuntimeError), ingest_run("lookup", account_id=A, region="eu-west-1", batch_size=10) as run:
        for record in kms(25, seed=4):
            run.ingestor.add(record)
        raise RuntimeError("throttled for good")
    with ingest_run("lookup", account_id=B, region="us-east-1") as run:
        run.ingestor.add(kms(1, seed=5)[0])
        run.fail("window cut short")  # ends normally, but as failed
    families = scrape(client)
    assert runs_figures(families, "lookup") == {
        "events": 27,
        "quarantined": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 2,
    }
    assert runs_figures(families, "lookup") == ledger_figures("lookup")
    assert_totals_are_the_ledgers()


def test_an_interrupted_run_is_failed_once_and_moves_again_only_if_its_worker_closes_it_after_all(
    client, enabled, file_broker
):
    dead = start_run("s3", account_id=A, region="eu-west-1")
    ingestor = Ingestor(dead, batch_size=10)
    for record in kms(15, seed=6):
        ingestor.add(record)
    ingestor.flush()  # committed, then the worker died
    assert close_interrupted_runs("s3", A, "eu-west-1") == 1
    assert close_interrupted_runs("s3", A, "eu-west-1") == 0  # nothing left to close: nothing moves
    families = scrape(client)
    assert runs_figures(families, "s3") == {
        "events": 15,
        "quarantined": 0,
        "running": 0,
        "succeeded": None,
        "failed": 1,
    }
    assert runs_figures(families, "s3") == ledger_figures("s3")

    # It was not dead after all: its close wins in the ledger, and the totals follow it.
    finish_run(dead, ingestor.counts)
    families = scrape(client)
    assert runs_figures(families, "s3") == {
        "events": 15,
        "quarantined": 0,
        "running": 0,
        "succeeded": 1,
        "failed": None,
    }
    assert runs_figures(families, "s3") == ledger_figures("s3")
    assert_totals_are_the_ledgers()


@pytest.fixture
def channels(tmp_path, monkeypatch, settings):
    """A file channel that works, and a webhook that answers 500 to everything."""
    settings.KMSDASH_ALERT_DELIVERY_TIMEOUT = 2
    settings.KMSDASH_ALERT_MAX_NOTIFICATIONS_PER_HOUR = 1
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    with Receiver(plan=[500] * 10) as receiver:
        Channel.objects.create(name="log", type=Channel.Type.FILE, target=str(tmp_path / "alerts.log"))
        Channel.objects.create(name="hook", type=Channel.Type.WEBHOOK, target=receiver.url, secret_env="HOOK_SECRET")
        yield receiver


def deliveries(families: dict) -> dict[tuple[str, str, str], float]:
    """{(family, channel type, state or outcome): value} of the two alert delivery families."""
    found = {}
    for family in ("kmsdash_alert_notifications", "kmsdash_alert_delivery_attempts"):
        for (_, items), count in families[family].items():
            labels = dict(items)
            found[(family, labels["channel_type"], labels.get("state") or labels["outcome"])] = count
    return found


def test_delivery_attempts_and_final_notification_states_are_counted_as_they_happen(
    client, enabled, file_broker, channels, settings
):
    notify_alert(make_alert(id=7), event="opened")
    notify_alert(make_alert(id=7), event="escalated")  # over the hourly limit on both channels: suppressed
    assert deliveries(scrape(client)) == {
        ("kmsdash_alert_notifications", "file", "pending"): 1,
        ("kmsdash_alert_notifications", "file", "suppressed"): 1,
        ("kmsdash_alert_notifications", "webhook", "pending"): 1,
        ("kmsdash_alert_notifications", "webhook", "suppressed"): 1,
    }
    deliver_pending()  # the file is written; the webhook fails and is retried later
    assert deliveries(scrape(client)) == {
        ("kmsdash_alert_notifications", "file", "delivered"): 1,
        ("kmsdash_alert_notifications", "file", "suppressed"): 1,
        ("kmsdash_alert_notifications", "webhook", "pending"): 1,
        ("kmsdash_alert_notifications", "webhook", "suppressed"): 1,
        ("kmsdash_alert_delivery_attempts", "file", "succeeded"): 1,
        ("kmsdash_alert_delivery_attempts", "webhook", "failed"): 1,
    }
    settings.KMSDASH_ALERT_DELIVERY_HOURS = 0  # its window has closed: the next failure is final
    deliver_pending(ignore_backoff=True)
    assert deliveries(scrape(client)) == {
        ("kmsdash_alert_notifications", "file", "delivered"): 1,
        ("kmsdash_alert_notifications", "file", "suppressed"): 1,
        ("kmsdash_alert_notifications", "webhook", "failed"): 1,
        ("kmsdash_alert_notifications", "webhook", "suppressed"): 1,
        ("kmsdash_alert_delivery_attempts", "file", "succeeded"): 1,
        ("kmsdash_alert_delivery_attempts", "webhook", "failed"): 2,
    }
    assert len(channels.requests) == 2
    assert_totals_are_the_ledgers()


def test_counters_are_read_from_the_database_so_they_survive_a_restart(client, enabled, file_broker):
    run = start_run("files")
    finish_run(run, ingest_records(kms(5, seed=8), run=run))
    # Nothing is counted in the process: the row in the database is the counter, and a scrape
    # by any process (a fresh collector each time) reads it.
    assert Total.objects.filter(name=totals.EVENTS, labels='{"source":"files"}').get().value == 5
    families = scrape(client)
    assert sample(families, "kmsdash_events_ingested", source="files") == 5
    assert sample(families, "kmsdash_ingest_runs", source="files", status="succeeded") == 1


def test_the_upsert_adds_to_an_existing_total_and_keys_labels_whatever_their_order():
    totals.add("t", {"b": "2", "a": "1"}, 3)
    totals.add("t", {"a": "1", "b": "2"}, 4)
    totals.add_many({totals.key("t", a="1", b="2"): -2, totals.key("t", a="x"): 1, totals.key("u"): 0})
    assert totals.read() == {("t", (("a", "1"), ("b", "2"))): 5, ("t", (("a", "x"),)): 1}
    assert Total.objects.count() == 2  # a zero change writes nothing


@pytest.mark.django_db(transaction=True)
def test_the_backfill_migration_sums_the_ledgers_an_older_version_left():
    from django.db.migrations.executor import MigrationExecutor

    # Ledger rows as the code before totals wrote them: no totals were kept.
    for kind, status, new, bad in [
        ("s3", "succeeded", 1200, 2),
        ("s3", "succeeded", 300, 0),
        ("s3", "failed", 0, 1),
        ("lookup", "succeeded", 50, 0),
        ("lookup", "running", 7, 0),
    ]:
        IngestRun.objects.create(
            kind=kind, account_id=A, region="eu-west-1", status=status, events_new=new, quarantined=bad
        )
    hook = Channel.objects.create(name="hook", type=Channel.Type.WEBHOOK, target="https://example.com/h")
    for state, outcomes in [("delivered", [False, True]), ("pending", [False, None]), ("suppressed", [])]:
        notification = Notification.objects.create(channel=hook, alert_id=1, event="opened", payload={}, state=state)
        for number, ok in enumerate(outcomes, 1):
            DeliveryAttempt.objects.create(
                notification=notification, channel=hook, number=number, started_at=timezone.now(), ok=ok
            )
    executor = MigrationExecutor(connection)
    executor.migrate([("kmsdash", "0006_total")])
    assert not Total.objects.exists()
    executor.loader.build_graph()
    executor.migrate([("kmsdash", "0007_backfill_totals")])
    assert totals.read() == {
        totals.key(totals.RUNS, source="s3", status="succeeded"): 2,
        totals.key(totals.RUNS, source="s3", status="failed"): 1,
        totals.key(totals.RUNS, source="lookup", status="succeeded"): 1,
        totals.key(totals.RUNS, source="lookup", status="running"): 1,
        totals.key(totals.EVENTS, source="s3"): 1500,
        totals.key(totals.EVENTS, source="lookup"): 57,
        totals.key(totals.QUARANTINED, source="s3"): 3,
        totals.key(totals.ATTEMPTS, channel_type="webhook", outcome="failed"): 2,
        totals.key(totals.ATTEMPTS, channel_type="webhook", outcome="succeeded"): 1,
        totals.key(totals.NOTIFICATIONS, channel_type="webhook", state="delivered"): 1,
        totals.key(totals.NOTIFICATIONS, channel_type="webhook", state="suppressed"): 1,
    }


def in_thread(target, *args) -> tuple[threading.Thread, list[BaseException]]:
    """`target` started in a thread of its own (its own database connection); errors kept to check."""
    errors: list[BaseException] = []

    def run():
        try:
            target(*args)
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


needs_server = pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need a server database")


@needs_server
@pytest.mark.django_db(transaction=True)
def test_two_workers_adding_to_the_same_totals_at_once_both_count():
    records = kms(3000, seed=9)
    barrier = threading.Barrier(2)

    def ingest(batch):
        run = start_run("s3", account_id=A, region="eu-west-1")
        ingestor = Ingestor(run, batch_size=100)
        barrier.wait()
        for record in batch:
            ingestor.add(record)
        ingestor.add("not json")
        ingestor.flush()
        finish_run(run, ingestor.counts)

    # Overlapping records in opposite orders: the same totals rows, written by both at once.
    workers = [in_thread(ingest, records[:2000]), in_thread(ingest, records[1000:][::-1])]
    for thread, errors in workers:
        thread.join()
        assert not errors
    assert Event.objects.count() == 3000
    read = totals.read()
    assert read[totals.key(totals.EVENTS, source="s3")] == 3000
    assert read[totals.key(totals.QUARANTINED, source="s3")] == 1  # the same bad record, kept once
    assert read[totals.key(totals.RUNS, source="s3", status="succeeded")] == 2
    assert_totals_are_the_ledgers()


@needs_server
@pytest.mark.django_db(transaction=True)
def test_a_run_closed_by_a_later_pass_while_its_own_worker_closes_it_moves_once():
    slow = start_run("s3", account_id=B, region="us-east-1")
    closed, commit = threading.Event(), threading.Event()

    def later_pass():
        with transaction.atomic():
            assert close_interrupted_runs("s3", B, "us-east-1") == 1
            closed.set()
            commit.wait(10)  # the row stays locked, its change uncommitted, until the worker has started

    def own_worker():
        closed.wait(10)
        finish_run(slow, Counts())

    closer, closer_errors = in_thread(later_pass)
    closed.wait(10)
    worker, worker_errors = in_thread(own_worker)
    time.sleep(0.5)  # the worker reaches the row (and waits for its lock) before the pass commits
    commit.set()
    for thread, errors in ((closer, closer_errors), (worker, worker_errors)):
        thread.join()
        assert not errors
    slow.refresh_from_db()
    assert slow.status == "succeeded"  # the worker's close came last
    read = totals.read()
    assert read[totals.key(totals.RUNS, source="s3", status="succeeded")] == 1
    assert totals.key(totals.RUNS, source="s3", status="failed") not in read
    assert totals.key(totals.RUNS, source="s3", status="running") not in read
    assert_totals_are_the_ledgers()


def ledger_rows_read(plan: dict) -> float:
    """Rows the plan's nodes read from the run ledger (its table or indexes), over all loops."""
    own = 0.0
    if plan.get("Relation Name") == IngestRun._meta.db_table:
        own = plan["Actual Rows"] * plan["Actual Loops"] + plan.get("Rows Removed by Filter", 0) * plan["Actual Loops"]
    return own + sum(ledger_rows_read(child) for child in plan.get("Plans", []))


@needs_server
def test_the_ingestion_health_a_scrape_runs_reads_a_few_ledger_rows_per_scope_not_the_ledger():
    now = timezone.now()
    # A year of 5-minute runs would be 105,000 per scope; 6,000 over three scopes show the shape.
    IngestRun.objects.bulk_create(
        IngestRun(
            kind="s3",
            account_id=account,
            region="eu-west-1",
            status="failed" if n == 10 else "succeeded",
            started_at=now - timedelta(minutes=5 * (2000 - n)),
            finished_at=now - timedelta(minutes=5 * (2000 - n)),
        )
        for account in (A, B, "777788889999")
        for n in range(2000)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {IngestRun._meta.db_table}")
    with CaptureQueriesContext(connection) as queries:
        health = ingestion_health(now)
    assert [(h.account_id, h.last_failure is not None) for h in health] == [
        (A, True),
        (B, True),
        ("777788889999", True),
    ]
    read = 0.0
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            if IngestRun._meta.db_table in query["sql"]:
                cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query['sql']}")
                (plan,) = cursor.fetchone()[0]
                read += ledger_rows_read(plan["Plan"])
    assert read < 100  # before: the whole ledger (6,000 rows) for the newest run of each scope
