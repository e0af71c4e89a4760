"""Analysts browsing kmsdash, for locust: driven by bench/load_bench.py, which logs a user in and
passes the session cookie and the sample key and principal through the environment.

Each simulated analyst opens the overview, the keys, a key's page and the explorer with its filters,
with a short think time between pages, as a person reading the dashboard would.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from locust import HttpUser, between, task

SESSION = os.environ["KMSDASH_LOAD_SESSION"]
KEY = os.environ["KMSDASH_LOAD_KEY"]
KEY_URL = os.environ["KMSDASH_LOAD_KEY_URL"]  # reverse()d by the driver
PRINCIPAL = os.environ["KMSDASH_LOAD_PRINCIPAL"]
OPERATION = os.environ.get("KMSDASH_LOAD_OPERATION", "Decrypt")


class Analyst(HttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.client.cookies.set("sessionid", SESSION)

    def get(self, url: str, name: str) -> None:
        # A redirect would be the login page (a lost session): count it as a failure, not a page.
        with self.client.get(url, name=name, allow_redirects=False, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")

    @task(3)
    def overview(self) -> None:
        self.get("/", "overview")

    @task(2)
    def overview_7d(self) -> None:
        self.get("/?period=7d", "overview 7d")

    @task(3)
    def keys(self) -> None:
        self.get("/keys/", "keys")

    @task(3)
    def key_detail(self) -> None:
        self.get(KEY_URL, "key detail")

    @task(3)
    def explorer(self) -> None:
        self.get("/events/", "explorer")

    @task(2)
    def explorer_by_key_failed(self) -> None:
        self.get(f"/events/?key={quote(KEY, safe='')}&error=any", "explorer key+failed")

    @task(2)
    def explorer_by_principal_after_hours(self) -> None:
        self.get(f"/events/?principal={quote(PRINCIPAL, safe='')}&after_hours=1", "explorer principal+after hours")

    @task(1)
    def explorer_by_operation(self) -> None:
        self.get(f"/events/?operation={OPERATION}", "explorer operation")
