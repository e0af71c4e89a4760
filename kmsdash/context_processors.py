from django.conf import settings
from django.http import HttpRequest


def kmsdash(request: HttpRequest) -> dict:
    return {"KMSDASH_DEMO": settings.KMSDASH_DEMO}
