"""The client address for django-axes: REMOTE_ADDR, or the one the outermost trusted proxy saw.

Each trusted proxy appends the address it received the request from to X-Forwarded-For, so
with N proxies the client is the N-th entry from the right; anything further left came from the
client and may be forged. (django-ipware's proxy_count counts from the left, which a client can
pad, so it is not used.)
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest

logger = logging.getLogger(__name__)
_warned = False


def client_ip(request: HttpRequest) -> str:
    global _warned
    trusted = settings.KMSDASH_TRUSTED_PROXY_COUNT
    remote = request.META.get("REMOTE_ADDR", "")
    if trusted <= 0:
        if not _warned and "HTTP_X_FORWARDED_FOR" in request.META:
            # Behind a proxy every client has the proxy's address: one attacker then locks a
            # username out for everyone. Said once per process, not once per request.
            _warned = True
            logger.warning(
                "A login came with X-Forwarded-For but KMSDASH_TRUSTED_PROXY_COUNT is 0: behind a proxy, "
                "set it to the number of proxies, or the login lockout sees every client as the proxy"
            )
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if len(hops) < trusted:
        # Not through the expected proxies: the address that reached us is all we can trust.
        return remote
    return hops[-trusted]
