"""The client address for django-axes: REMOTE_ADDR, or the one the outermost trusted proxy saw.

Each trusted proxy appends the address it received the request from to X-Forwarded-For, so
with N proxies the client is the N-th entry from the right; anything further left came from the
client and may be forged. (django-ipware's proxy_count counts from the left, which a client can
pad, so it is not used.)
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    trusted = settings.KMSDASH_TRUSTED_PROXY_COUNT
    remote = request.META.get("REMOTE_ADDR", "")
    if trusted <= 0:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if len(hops) < trusted:
        # Not through the expected proxies: the address that reached us is all we can trust.
        return remote
    return hops[-trusted]
