"""Login enforcement that htmx understands, and the answer shape htmx asks for.

Django's LoginRequiredMiddleware answers an anonymous request with a 302 to the login page. htmx
follows that redirect inside its XMLHttpRequest and swaps the login form into the fragment target:
a page inside a page. For htmx requests we answer 200 with `HX-Redirect` instead, which htmx turns
into a full navigation, and we send the user back to the page they were on, not to the fragment.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.contrib.auth.views import redirect_to_login
from django.db import DEFAULT_DB_ALIAS, DatabaseError, OperationalError, connections
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from .dbrouter import REPLICA

logger = logging.getLogger(__name__)


def page_path(request: HttpRequest, htmx: HtmxDetails) -> str:
    """The browser's page (HX-Current-URL) as a local path, or the request's own path.

    The header is client-supplied: only a same-origin URL is used, reduced to its path, and the path
    is checked again so that `//evil.example/` (a same-origin URL whose path looks like a host)
    cannot turn `next` into an open redirect.
    """
    path = htmx.current_url_abs_path
    if path and path.startswith("/") and url_has_allowed_host_and_scheme(path, allowed_hosts=None):
        return path
    return request.get_full_path()


class HtmxHttpRequest(HttpRequest):
    """A request after django_htmx's HtmxMiddleware, for views that read request.htmx (type checking only)."""

    htmx: HtmxDetails


class HtmxLoginRequiredMiddleware(LoginRequiredMiddleware):
    """LoginRequiredMiddleware, with an htmx-shaped answer for htmx requests."""

    # Django returns whatever this gives; the stubs say a redirect, and htmx gets a 200 with HX-Redirect.
    def handle_no_permission(self, request: HttpRequest, view_func) -> HttpResponse:  # type: ignore[override]
        # Built here rather than read from request.htmx: this works whether or not HtmxMiddleware
        # (further down MIDDLEWARE) is installed.
        htmx = HtmxDetails(request)
        response: HttpResponse
        if not htmx:
            response = super().handle_no_permission(request, view_func)
        else:
            login = redirect_to_login(
                page_path(request, htmx),
                resolve_url(self.get_login_url(view_func)),
                self.get_redirect_field_name(view_func),
            )
            # A 302 would be followed inside the XMLHttpRequest before htmx sees it; a 200 with
            # HX-Redirect makes htmx navigate the whole window.
            response = HttpResponseClientRedirect(login.url)
        return response  # VaryOnHtmxMiddleware adds Vary: HX-Request, as to every response


def wants_fragment(request: HttpRequest) -> bool:
    """Whether to answer with the page's htmx fragment rather than the whole page.

    A boosted request and a history restore (htmx re-requesting a page it has no snapshot of, to
    swap into <body>) want the whole page; any other htmx request only the fragment it swaps."""
    htmx = getattr(request, "htmx", None)
    if not htmx:
        return False
    return not htmx.boosted and not htmx.history_restore_request


class VaryOnHtmxMiddleware:
    """Every URL may answer as a page or as a fragment: a cache must not hand one to the other."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        patch_vary_headers(response, ("HX-Request",))
        return response


# --- statement timeout ----------------------------------------------------------------------------

QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout


def _start_timeout(connection, milliseconds: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {int(milliseconds)}")
    elif connection.vendor == "sqlite":
        # SQLite has no statement timeout: its progress handler, called every 10,000 virtual-machine
        # steps, interrupts the statement once the deadline has passed.
        deadline = time.monotonic() + milliseconds / 1000
        connection.ensure_connection()
        connection.connection.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)


def _stop_timeout(connection) -> None:
    if connection.connection is None:
        return
    try:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("RESET statement_timeout")
        elif connection.vendor == "sqlite":
            connection.connection.set_progress_handler(None, 0)
    except DatabaseError:
        # A connection that cannot even reset is not handed to the next request with a limit on it.
        connection.close()


def is_statement_timeout(exception: BaseException) -> bool:
    if not isinstance(exception, OperationalError):
        return False
    cause = exception.__cause__
    return getattr(cause, "sqlstate", None) == QUERY_CANCELED or str(exception) == "interrupted"


class StatementTimeoutMiddleware:
    """Every request's SQL statements stop after KMSDASH_STATEMENT_TIMEOUT_MS, and the page says so.

    A logged-in user can ask for an expensive query (free-text search over a long window); the
    limit turns it into a clear message (503) instead of a worker busy for minutes or a 500. Only
    requests get it: ingestion, purges and migrations run in other processes without a limit. A
    streamed response (a CSV export) keeps the limit per statement until it has been sent.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        milliseconds = settings.KMSDASH_STATEMENT_TIMEOUT_MS
        if not milliseconds:
            return self.get_response(request)
        # The primary, and the read replica the pages may read from (kmsdash/dbrouter.py).
        limited = [connections[alias] for alias in connections if alias in (DEFAULT_DB_ALIAS, REPLICA)]
        for connection in limited:
            _start_timeout(connection, milliseconds)

        def stop() -> None:
            for connection in limited:
                _stop_timeout(connection)

        try:
            response = self.get_response(request)
        except BaseException:
            stop()
            raise
        if response.streaming:
            response._resource_closers.append(stop)
        else:
            stop()
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_statement_timeout(exception):
            return None
        logger.warning("statement timeout", extra={"path": request.path})
        context = {"seconds": settings.KMSDASH_STATEMENT_TIMEOUT_MS / 1000}
        if getattr(request, "htmx", False):
            # htmx swaps no 5xx answer: show the message in the page's main area instead.
            response = render(request, "query_timeout.html#message", context)
            response["HX-Retarget"] = "main"
            response["HX-Reswap"] = "innerHTML"
            return response
        return render(request, "query_timeout.html", context, status=503)


class PrivateCacheMiddleware:
    """`Cache-Control: private, no-store` on every response to a signed-in user.

    Every such page shows data of the account (events, costs, findings, exports): neither a shared
    cache nor the browser's history may keep a copy for the next person at the keyboard.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            patch_cache_control(response, private=True, no_store=True)
        return response


# --- request header size ----------------------------------------------------------------------------

# gunicorn.conf.py's limit_request_field_size: the longest header field gunicorn lets through.
MAX_HEADER_BYTES = 8190


class HeaderSizeMiddleware:
    """431 for a request with a header value longer than one header field may be.

    gunicorn caps each field's size and the number of fields, but joins repeated fields into one
    value: 30 Cookie fields of 8 KB reach Django as one 240 KB cookie, which an unpatched
    http.cookies (CVE-2024-7592) takes minutes to parse. First in MIDDLEWARE, before anything reads
    a header, so that no header parser ever sees more than one field's worth of text.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for name, value in request.META.items():
            if name.startswith("HTTP_") and isinstance(value, str) and len(value) > MAX_HEADER_BYTES:
                return HttpResponse(
                    "Request header fields too large.\n", status=431, content_type="text/plain; charset=utf-8"
                )
        return self.get_response(request)
