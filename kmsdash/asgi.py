import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")
application = get_asgi_application()

# As kmsdash/wsgi.py: never serve with the public development key outside the demo and DEBUG.
from kmsdash.checks import refuse_public_key  # noqa: E402  (needs the settings loaded above)

refuse_public_key()
