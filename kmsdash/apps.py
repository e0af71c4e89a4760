from django.apps import AppConfig


class KmsdashConfig(AppConfig):
    name = "kmsdash"
    verbose_name = "kmsdash"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the deploy check)
            signin,  # noqa: F401  (starts the session clock at every login)
        )
