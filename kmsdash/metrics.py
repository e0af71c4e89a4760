"""/metrics: the product's own health in the Prometheus text format, for the monitoring a team runs.

Every figure is read from the database or the broker at scrape time by a custom collector, so
counters survive restarts and agree across gunicorn workers without prometheus_client's
multiprocess mode. Counters come from running totals that the ledgers' writers keep in the
transactions of their ledger changes (kmsdash/totals.py), so a scrape costs the same however long
the run and delivery ledgers grow (runs in progress are a total too: +1 at a run's start, -1 at
its close). The gauges that tell the present (lag per scope, the delivery queue) are queries
bounded by the number of scopes or the queue, never by the ledgers
(audits.selectors.ingestion_health, notify.selectors.pending_counts). Never Event.

Access: `Authorization: Bearer $KMSDASH_METRICS_TOKEN`, compared in constant time. While the
variable is unset the URL answers 404, as if it did not exist; a wrong or missing token gets 401.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Iterable, Iterator

from csp.decorators import csp_exempt
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from audits.models import IngestRun
from audits.selectors import ingestion_health
from notify import selectors as notify_selectors

from . import totals
from .celery import app as celery_app

log = logging.getLogger(__name__)

BROKER_TIMEOUT = 2.0  # seconds for the whole broker read: a broker that hangs costs a scrape this long


def broker_queues() -> list[str]:
    """The queues workers consume: Celery's default one and any declared in CELERY_TASK_QUEUES."""
    names = [celery_app.conf.task_default_queue]
    names += [queue.name for queue in celery_app.conf.task_queues or ()]
    return list(dict.fromkeys(names))


def queue_lengths(queues: Iterable[str], timeout: float = BROKER_TIMEOUT) -> dict[str, int] | None:
    """Messages waiting per queue, or None when the broker does not answer within `timeout`.

    A passive declare is kombu's transport-neutral "how many messages": LLEN of the queue's keys on
    Redis (one per priority step), the count of message files on the filesystem broker, the declare
    reply on AMQP. It runs in a daemon thread so a broker that swallows packets cannot hold the scrape.
    """
    queues = list(queues)
    lengths: dict[str, int] = {}
    failure: list[BaseException] = []

    def read() -> None:
        try:
            options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
            with celery_app.connection_for_read(transport_options=options, connect_timeout=timeout) as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
                for name in queues:
                    # One channel per queue: on AMQP a passive declare of a missing queue closes its channel.
                    with conn.channel() as channel:
                        try:
                            lengths[name] = channel.queue_declare(queue=name, passive=True).message_count
                        except conn.channel_errors:
                            lengths[name] = 0  # never declared (Redis: no list yet): nothing waits in it
        except Exception as exc:  # any failure is "broker down"; the log says which
            failure.append(exc)

    thread = threading.Thread(target=read, daemon=True, name="metrics-broker")
    thread.start()
    thread.join(timeout)
    if thread.is_alive() or failure or len(lengths) != len(queues):
        error = f"{type(failure[0]).__name__}: {failure[0]}" if failure else f"no answer within {timeout} s"
        log.warning("metrics: broker unavailable", extra={"error": error})
        return None
    return lengths


class KmsdashCollector(Collector):
    """Builds every metric from the database and the broker each time it is collected."""

    sums: dict[totals.Key, int]

    def collect(self) -> Iterator[Metric]:
        # Counters are running totals kept by their ledgers' writers (kmsdash/totals.py): one read
        # of a few dozen rows, however long the ledgers are.
        self.sums = totals.read()
        yield from self.ingestion()
        yield from self.deliveries()
        yield from self.broker()

    def ingestion(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "kmsdash_ingest_lag_seconds",
            "Now minus how far each (source, account, region) has read: its checkpoint, or for a source "
            "without one the end of its last successful run (the health page's rule).",
            labels=["source", "account", "region"],
        )
        for scope in ingestion_health(timezone.now()):
            if scope.lag is not None:
                lag.add_metric([scope.kind, scope.account_id, scope.region], scope.lag.total_seconds())
        yield lag

        events = CounterMetricFamily(
            "kmsdash_events_ingested", "New events stored (the run ledger's sum).", labels=["source"]
        )
        quarantined = CounterMetricFamily(
            "kmsdash_records_quarantined", "Records or files quarantined (the run ledger's sum).", labels=["source"]
        )
        runs = CounterMetricFamily(
            "kmsdash_ingest_runs", "Finished ingestion runs by outcome.", labels=["source", "status"]
        )
        running = GaugeMetricFamily("kmsdash_ingest_runs_running", "Ingestion runs in progress.", labels=["source"])
        counts = self.sums
        kinds = {dict(labels)["source"] for name, labels in counts if name in (totals.EVENTS, totals.RUNS)}
        for kind in sorted(set(IngestRun.Kind.values) | kinds):
            events.add_metric([kind], counts.get(totals.key(totals.EVENTS, source=kind), 0))
            quarantined.add_metric([kind], counts.get(totals.key(totals.QUARANTINED, source=kind), 0))
            # Not a counter: a running run becomes succeeded or failed.
            running.add_metric([kind], counts.get(totals.key(totals.RUNS, source=kind, status="running"), 0))
        for (name, labels), value in sorted(counts.items()):
            label = dict(labels)
            if name == totals.RUNS and label["status"] != IngestRun.Status.RUNNING:
                runs.add_metric([label["source"], label["status"]], value)
        yield from (events, quarantined, runs, running)

    def deliveries(self) -> Iterator[Metric]:
        notifications = GaugeMetricFamily(
            "kmsdash_alert_notifications",
            "Alert notifications by channel type and state (pending is the delivery queue).",
            labels=["channel_type", "state"],
        )
        by_state = {(channel_type, "pending"): n for channel_type, n in notify_selectors.pending_counts().items()}
        attempts = CounterMetricFamily(
            "kmsdash_alert_delivery_attempts",
            "Finished delivery attempts by channel type and outcome (the delivery ledger's sum).",
            labels=["channel_type", "outcome"],
        )
        for (name, labels), value in sorted(self.sums.items()):
            label = dict(labels)
            if name == totals.NOTIFICATIONS:
                by_state[(label["channel_type"], label["state"])] = value
            elif name == totals.ATTEMPTS:
                attempts.add_metric([label["channel_type"], label["outcome"]], value)
        for (channel_type, state), count in sorted(by_state.items()):
            notifications.add_metric([channel_type, state], count)
        yield from (notifications, attempts)

    def broker(self) -> Iterator[Metric]:
        lengths = queue_lengths(broker_queues())
        up = GaugeMetricFamily("kmsdash_broker_up", "1 when the Celery broker answered this scrape.")
        up.add_metric([], 0 if lengths is None else 1)
        yield up
        queue = GaugeMetricFamily(
            "kmsdash_celery_queue_length", "Tasks waiting in each Celery queue.", labels=["queue"]
        )
        for name, length in sorted((lengths or {}).items()):
            queue.add_metric([name], length)
        yield queue


def render_metrics() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KmsdashCollector())
    return generate_latest(registry)


def authorised(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes the same time wherever the strings differ: the token cannot be guessed
    # byte by byte from response times.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@login_not_required  # a bearer token, not a session: Prometheus has no login
@csp_exempt()  # plain text, never rendered by a browser
@require_safe
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.KMSDASH_METRICS_TOKEN
    if not token:
        raise Http404  # disabled: nothing says the endpoint exists
    if not authorised(request, token):
        response = HttpResponse("Bearer token required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="kmsdash metrics"'
        return response
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
