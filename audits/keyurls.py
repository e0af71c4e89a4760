"""The one place that turns a key identifier into a URL of this site.

Key identifiers are caller-chosen text (a failed call is logged with whatever keyId it sent), so a
link built from one by hand can lead elsewhere: `alias/../../health` is resolved by the browser to
another page (and %2E the same way), a line break cannot be carried by a path at all. Every link to
a key's pages goes through here; tests/audits/test_key_urls.py fails on one built another way.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.urls import NoReverseMatch, reverse


def key_path(view_name: str, key: str, *, argument: str = "key") -> str | None:
    """The URL of `view_name` for exactly `key`, or None when no path can carry it."""
    if any(segment in (".", "..") for segment in str(key).split("/")):
        return None
    try:
        return reverse(view_name, kwargs={argument: key})
    except NoReverseMatch:
        return None


def key_url(key: str) -> str:
    """The key's detail page; keys no path can carry go to the explorer filtered by that key."""
    return key_path("audits:key_detail", key) or f"{reverse('audits:events')}?{urlencode({'key': key})}"


def key_panel_url(key: str) -> str | None:
    """The key's inventory fragment, or None when no path can carry the key."""
    return key_path("inventory:key_panel", key)


def key_access_url(key: str) -> str | None:
    """The key's "who can" fragment, or None when no path can carry the key."""
    return key_path("access:key_access", key)


def principal_url(arn: str) -> str | None:
    """A principal's page (principal ARNs come from CloudTrail too: the same care as keys)."""
    return key_path("access:principal", arn, argument="arn")
