"""Playwright helpers: Debian's chromium against pytest-django's live server, with a watchdog.

The watchdog records everything a hostile string could make happen in the page: dialogs
(alert/confirm/prompt), Content-Security-Policy violations, uncaught script errors and requests
to any origin other than the live server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"

# Runs before any page script: CSP violations are reported to the page as DOM events only.
RECORD_CSP_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push({directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample, source: e.sourceFile});
});
"""


@dataclass
class Watchdog:
    origin: str
    dialogs: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def attach(self, page) -> None:
        def on_dialog(dialog):
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        def on_request(request):
            url = request.url
            if url.startswith(("data:", "blob:", "about:")):
                return
            parts = urlsplit(url)
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                self.foreign_requests.append(url)

        page.on("dialog", on_dialog)
        page.on("request", on_request)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("console", lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None)

    def assert_clean(self, page, where: str) -> None:
        csp = page.evaluate("window.__csp || []")
        injected = page.evaluate(
            """() => ({
                javascriptLinks: document.querySelectorAll('a[href^="javascript:" i]').length,
                eventHandlers: Array.from(document.querySelectorAll('*')).filter(
                    el => Array.from(el.attributes).some(a => a.name.startsWith('on'))).map(el => el.outerHTML.slice(0, 120)),
                inlineScripts: Array.from(document.querySelectorAll('script:not([src])')).filter(
                    s => s.type !== 'application/json').map(s => s.outerHTML.slice(0, 120)),
                xImages: document.querySelectorAll('img[src="x"]').length,
                pwned: window.__pwned || null,
            })"""
        )
        problems = {
            "dialogs": self.dialogs,
            "csp violations": csp,
            "foreign requests": self.foreign_requests,
            "script errors": self.page_errors,
            "injected javascript: links": injected["javascriptLinks"],
            "elements with on* handlers": injected["eventHandlers"],
            "inline scripts": injected["inlineScripts"],
            "img src=x": injected["xImages"],
            "pwned": injected["pwned"],
        }
        problems = {name: found for name, found in problems.items() if found}
        # 403/404 answers to deliberate probes show up as console errors; anything else is a finding.
        assert not problems, f"{where}: {problems}"


def new_page(chromium, live_server_url: str, *, accept_downloads: bool = False):
    context = chromium.new_context(
        base_url=live_server_url, viewport={"width": 1440, "height": 1000}, accept_downloads=accept_downloads
    )
    context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(15000)
    watchdog = Watchdog(origin=live_server_url.rstrip("/"))
    watchdog.attach(page)
    return context, page, watchdog


def log_in(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
