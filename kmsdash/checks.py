"""The secret key rule: the public development key is refused wherever it would sign real sessions.

Django's own deploy check (security.W009) only warns about a weak key, and a warning does not stop
a deployment. Here the development key is an error outside the demo and DEBUG, in the two places
that stand before serving real users: `manage.py check --deploy` and the WSGI entry point
(kmsdash/wsgi.py). Management commands, Celery and the test suite never serve a request, so they
keep working with zero configuration.
"""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

PUBLIC_KEY_MESSAGE = (
    "SECRET_KEY is the public development key: anyone could forge sessions and CSRF tokens. "
    "Set KMSDASH_SECRET_KEY, or KMSDASH_SECRET_KEY_FILE to a file holding the key "
    "(`make run` creates var/secret_key), or KMSDASH_DEMO=True for the demo."
)


def uses_public_key() -> bool:
    return settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY and not (settings.DEBUG or settings.KMSDASH_DEMO)


@checks.register(checks.Tags.security, deploy=True)
def check_secret_key(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if uses_public_key():
        return [checks.Error(PUBLIC_KEY_MESSAGE, id="kmsdash.E001")]
    return []


def refuse_public_key() -> None:
    """Called by the WSGI and ASGI entry points before they serve anything."""
    if uses_public_key():
        raise ImproperlyConfigured(PUBLIC_KEY_MESSAGE)
