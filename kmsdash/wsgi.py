import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")
application = get_wsgi_application()

# Outside the demo and DEBUG, never serve with the public development key (kmsdash/checks.py).
from kmsdash.checks import refuse_public_key  # noqa: E402  (needs the settings loaded above)

refuse_public_key()
