"""A URLconf with one deliberately slow page, for the statement-timeout tests (tests/audits/test_explorer_limits.py)."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from kmsdash.roles import ANALYST, role_required

# Seconds on either database, far past the tests' 0.3 s limit.
SLOW_SQL = {
    "postgresql": "SELECT pg_sleep(15)",
    "sqlite": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) SELECT count(*) FROM n",
}


@role_required(ANALYST)
def slow(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute(SLOW_SQL[connection.vendor])
    return HttpResponse("finished")


@role_required(ANALYST)
def timeout_setting(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        return HttpResponse(cursor.fetchone()[0])


urlpatterns = [
    path("slow/", slow),
    path("timeout-setting/", timeout_setting),
    path("", include("kmsdash.urls")),
]
