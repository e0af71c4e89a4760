"""/healthz: for load balancers and orchestrators, without login.

200 {"database": "ok", "broker": "ok"} when both answer; 503 with "unavailable" for the one that
does not. Nothing else is revealed (no versions, hosts or error text: anyone can call it); the
reason goes to the log. Each probe runs in a thread of its own and is given PROBE_TIMEOUT seconds,
so a database or broker that hangs (a dropped packet, not a refused connection) costs the caller
at most that long, below the usual 5-second load-balancer timeout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .celery import app as celery_app

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0  # seconds, both probes at once


def database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # this thread's own connection: nothing else would close it


def broker() -> None:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=PROBE_TIMEOUT)
        if conn.transport_cls == "filesystem":
            # The file broker "connects" to anything: it answers when its queue folder takes files.
            folder = str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
            if not os.access(folder, os.W_OK | os.X_OK):
                raise OSError(f"broker folder {folder} is missing or not writable")


PROBES: dict[str, Callable[[], None]] = {"database": database, "broker": broker}


def run_probes(timeout: float = PROBE_TIMEOUT) -> dict[str, str]:
    outcome: dict[str, str] = {}

    def run(name: str, probe: Callable[[], None]) -> None:
        try:
            probe()
        except Exception as exc:  # any failure is "unavailable"; the log says which
            log.warning("health probe failed", extra={"probe": name, "error": f"{type(exc).__name__}: {exc}"})
            outcome[name] = "unavailable"
        else:
            outcome[name] = "ok"

    # Daemon threads: one stuck in a connect never holds up the next probe or the server's exit.
    threads = [
        threading.Thread(target=run, args=item, daemon=True, name=f"healthz-{item[0]}") for item in PROBES.items()
    ]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))  # they run at once: `timeout` in all
    for name in PROBES:
        if name not in outcome:
            log.warning("health probe timed out", extra={"probe": name, "timeout": timeout})
    return {name: outcome.get(name, "unavailable") for name in PROBES}


@login_not_required
@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    status = run_probes()
    healthy = all(value == "ok" for value in status.values())
    return JsonResponse(status, status=200 if healthy else 503)
