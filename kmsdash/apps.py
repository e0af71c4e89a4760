from django.apps import AppConfig


class KmsdashConfig(AppConfig):
    name = "kmsdash"
    verbose_name = "kmsdash"

    def ready(self) -> None:
        # Imported here, not at the top: importing them is what registers the check and the
        # login receiver, and signin imports the auth app's views and models, which cannot load
        # before the app registry is ready (apps.py itself is imported while it is being filled).
        from . import (
            checks,  # noqa: F401  (registers the deploy check)
            signin,  # noqa: F401  (starts the session clock at every login)
        )
