"""Login enforcement that htmx understands, and the answer shape htmx asks for.

Django's LoginRequiredMiddleware answers an anonymous request with a 302 to the login page. htmx
follows that redirect inside its XMLHttpRequest and swaps the login form into the fragment target:
a page inside a page. For htmx requests we answer 200 with `HX-Redirect` instead, which htmx turns
into a full navigation, and we send the user back to the page they were on, not to the fragment.
"""

from __future__ import annotations

from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails


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
