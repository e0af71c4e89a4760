"""The browser tests' fixture: Debian's chromium driven by playwright (helpers in support.py)."""

from __future__ import annotations

import os

import pytest

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS


# Module scope: playwright's loop (and the flag below) must not outlive the browser tests.
@pytest.fixture(scope="module")
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import Error, sync_playwright

    # Playwright's sync API keeps an asyncio loop on this thread for as long as it runs; Django
    # would refuse every ORM call made from the test thread meanwhile (database setup, fixtures).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            try:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            except Error as exc:
                pytest.skip(f"chromium cannot start here: {exc}")
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous
