from django.apps import AppConfig


class KmsdashConfig(AppConfig):
    name = "kmsdash"
    verbose_name = "kmsdash"
