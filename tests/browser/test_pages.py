"""The dashboard in a real browser: login, htmx filters, charts, the raw drawer, the CSV download,
and hostile CloudTrail text on every page doing nothing at all."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from audits.ingest import finish_run, ingest_records, start_run
from audits.models import Event
from audits.synthetic import generate_records, identity_role, identity_user, kms_record
from kmsdash.models import ExportAudit
from tests.browser.support import log_in, new_page, screenshot
from tests.support import PASSWORD, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

UA_IMG = "<img src=x onerror=alert(1)>"
UA_SVG = '"><svg/onload=alert(1)>'
UA_HTMX = 'x" hx-get="/events/export.csv" hx-trigger="load'
ERROR_SCRIPT = "</script><script>alert(1)</script>"
ERROR_LINK = '<a href="javascript:alert(1)">x</a>'
ERROR_MATHJAX = "$\\href{javascript:alert(1)}{x}$"
CONTEXT = {"<b>x</b>": "<script>alert(1)</script>", "__proto__": "<img src=x onerror=alert(1)>"}
SESSION = "=1+1\u202egnp"
ROLE = "app\u202eevil"


def hostile_records(now: datetime) -> list[dict]:
    def record(minutes: int, **fields) -> dict:
        base: dict[str, Any] = {
            "event_name": "Decrypt",
            "event_time": now - timedelta(minutes=minutes),
            "key_arn": KEY,
            "identity": identity_role(ACCOUNT, ROLE, SESSION),
            "region": "us-east-1",
            "recipient_account_id": ACCOUNT,
        }
        base.update(fields)
        return kms_record(**base)

    return [
        record(30, user_agent=UA_IMG, encryption_context=CONTEXT),
        record(40, user_agent=UA_SVG, error_code="AccessDenied", error_message=ERROR_SCRIPT),
        record(50, user_agent=UA_HTMX, error_code=ERROR_LINK, error_message=UA_IMG),
        record(60, event_name="DisableKey", error_code=ERROR_MATHJAX, error_message=ERROR_LINK),
        record(70, event_name="ScheduleKeyDeletion", identity=identity_user(ACCOUNT, '=HYPERLINK("http://evil")')),
    ]


@pytest.fixture
def world(chromium):
    from costs.models import CostRecord
    from inventory.models import Finding, Key

    now = datetime.now(UTC).replace(microsecond=0)
    run = start_run("files")
    records = hostile_records(now) + list(generate_records(400, seed=2, start=now - timedelta(days=6), days=6))
    finish_run(run, ingest_records(records, run=run))
    Key.objects.create(
        arn=KEY,
        key_id=KEY.rsplit("/", 1)[1],
        account_id=ACCOUNT,
        region="us-east-1",
        key_manager="CUSTOMER",
        key_state="Enabled",
        description='<iframe srcdoc="<script>parent.alert(1)</script>">',
        last_seen_at=now,
        tags={"team": UA_IMG, "<b>owner</b>": ERROR_LINK},
        policy='{"Statement": [{"Effect": "Allow", "Principal": {"AWS": "<img src=x onerror=alert(1)>"}, "Action": "kms:*"}]}',
    )
    Finding.objects.create(
        fingerprint="f" * 64,
        kind=Finding.Kind.ROTATION_DISABLED,
        severity=Finding.Severity.HIGH,
        key=KEY,
        subject=UA_SVG,
        account_id=ACCOUNT,
        region="us-east-1",
        summary=f"Rotation is off {ERROR_SCRIPT}",
        evidence={"note": UA_IMG},
        first_seen_at=now,
        last_seen_at=now,
    )
    # A delivery that failed with a receiver's hostile answer in its error, for the health page.
    from notify.models import Channel, Notification

    channel = Channel.objects.create(name=f"hook {UA_IMG}", type="webhook", target="https://hooks.example.com/")
    Notification.objects.create(
        channel=channel,
        alert_id=1,
        event="opened",
        payload={},
        state="failed",
        finished_at=now,
        last_error=f"HTTP 500 {ERROR_SCRIPT}",
    )
    for days_ago in range(1, 8):
        for usage_type, amount in (
            ("us-east-1-KMS-Requests", "0.12"),
            (UA_IMG, "-1.50"),
            ("us-east-1-KMS-Keys", "1.00"),
        ):
            CostRecord.objects.create(
                day=(now - timedelta(days=days_ago)).date(),
                account_id=ACCOUNT,
                usage_type=usage_type,
                usage_class="symmetric",
                region="us-east-1",
                metric="UnblendedCost",
                amount=Decimal(amount),
                usage_quantity=Decimal("1000"),
                estimated=days_ago < 3,
                fetched_at=now,
            )
    make_user("boss", "admin")
    make_user("ana", "analyst")
    return {"now": now, "event": Event.objects.get(user_agent=UA_IMG)}


def wait_for_charts(page) -> None:
    page.wait_for_selector(".js-plotly-plot .main-svg", state="attached")


def test_an_analyst_filters_the_overview_and_events_with_htmx_and_opens_the_raw_drawer(chromium, live_server, world):
    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        log_in(page, "ana", PASSWORD)
        page.goto("/")
        wait_for_charts(page)
        first_charts = page.locator(".js-plotly-plot .main-svg").count()
        assert first_charts >= 1

        # Changing the period swaps #results through htmx and pushes the new URL.
        page.select_option("select[name=period]", index=0)
        page.wait_for_url(lambda url: "period=" in url)
        wait_for_charts(page)
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # no full reload
        watchdog.assert_clean(page, "overview after a period change")

        page.goto("/events/")
        page.fill("input[name=operation]", "DisableKey")
        page.press("input[name=operation]", "Enter")
        page.wait_for_url(lambda url: "operation=DisableKey" in url)
        page.wait_for_function("document.querySelectorAll('#results tbody tr').length >= 1")
        operations = page.locator("#results tbody tr td:nth-child(2)").all_inner_texts()
        assert operations and set(operations) == {"DisableKey"}
        assert parse_qs(urlsplit(page.url).query)["operation"] == ["DisableKey"]

        # The raw drawer shows the record as text.
        page.goto(f"/events/?q={UA_IMG}")
        page.click("#results button:has-text('Raw')")
        page.wait_for_selector("#drawer pre.raw")
        raw = page.inner_text("#drawer pre.raw")
        assert "<script>alert(1)</script>" in raw and "<img src=x onerror=alert(1)>" in raw
        screenshot(page, "events-drawer")
        watchdog.assert_clean(page, "events with the raw drawer open")

        # An analyst is not offered the export.
        assert page.locator("a:has-text('Export CSV')").count() == 0
    finally:
        context.close()


def test_an_admin_downloads_the_filtered_export(chromium, live_server, world, tmp_path):
    context, page, watchdog = new_page(chromium, live_server.url, accept_downloads=True)
    try:
        log_in(page, "boss", PASSWORD)
        page.goto("/events/?error=any")
        with page.expect_download() as download_info:
            page.get_by_role("button", name="Export CSV").click()
        download = download_info.value
        assert download.suggested_filename.startswith("kms-events-") and download.suggested_filename.endswith(".csv")
        path = tmp_path / download.suggested_filename
        download.save_as(path)
        body = path.read_bytes()
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
        expected = Event.objects.exclude(error_code="").count()
        assert len(rows) == expected >= 4
        assert all(row["error_code"] for row in rows)
        assert {row["session_name"] for row in rows if row["session_name"].startswith("'")} == {"'" + SESSION}
        audit = ExportAudit.objects.get()
        assert audit.status == ExportAudit.Status.COMPLETED and audit.rows == expected
        assert audit.filters["error"] == "any"
        watchdog.assert_clean(page, "events page after the download")
    finally:
        context.close()


PAGES = [
    ("overview", "/", True),
    ("events", "/events/", False),
    ("keys", "/keys/", False),
    ("key-detail", f"/keys/{KEY}/", True),
    ("critical", "/critical/", False),
    ("findings", "/findings/", False),
    ("capacity", "/capacity/", False),
    ("costs", "/costs/", True),
    ("health", "/health/", False),
    ("exports", "/exports/", False),
    ("admin-events", "/admin/audits/event/", False),
]


def test_hostile_cloudtrail_text_is_inert_on_every_page(chromium, live_server, world):
    context, page, watchdog = new_page(chromium, live_server.url, accept_downloads=True)
    try:
        log_in(page, "boss", PASSWORD)
        # An export audit row with a hostile filter, for the exports page.
        # The explorer's export button posts its form, with the page's CSRF token.
        page.goto(f"/events/?principal={quote(UA_IMG)}")
        with page.expect_download() as download:
            page.get_by_role("button", name="Export CSV").click()
        assert download.value.suggested_filename.startswith("kms-events-")
        for name, path, charts in PAGES:
            page.goto(path)
            page.wait_for_load_state("networkidle")
            if charts:
                wait_for_charts(page)
            if name == "key-detail":
                page.wait_for_selector("#inventory-panel h2")
            screenshot(page, name)
            watchdog.assert_clean(page, name)
        page.goto(f"/admin/audits/event/{world['event'].pk}/change/")
        assert "<script>alert(1)</script>" in page.inner_text("body")
        watchdog.assert_clean(page, "admin event page")
        # The injected hx-get never fired: no export besides the one asked for above.
        assert ExportAudit.objects.count() == 1
    finally:
        context.close()


def test_htmx_fragments_with_hostile_text_stay_inert_after_a_swap(chromium, live_server, world):
    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        log_in(page, "boss", PASSWORD)
        page.goto("/events/")
        page.fill("input[name=q]", "<")
        page.press("input[name=q]", "Enter")
        page.wait_for_url(lambda url: "q=%3C" in url)
        page.wait_for_function("document.querySelectorAll('#results tbody tr').length >= 2")
        text = page.inner_text("#results")
        assert UA_IMG in text and UA_SVG.strip() in text
        for row in page.locator("#results button:has-text('Raw')").all()[:3]:
            row.click()
            page.wait_for_selector("#drawer pre.raw")
            page.click("#drawer button:has-text('Close')")
            page.wait_for_selector("#drawer pre.raw", state="detached")
        watchdog.assert_clean(page, "events after an htmx swap")
    finally:
        context.close()


def test_the_watchdog_notices_an_injection_and_the_policy_blocks_it(chromium, live_server, world):
    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        page.goto("/accounts/login/")
        watchdog.assert_clean(page, "login page")
        # What a missing escape would produce: the policy blocks the handler, and it is seen.
        page.evaluate("document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"window.__pwned=1\">')")
        page.wait_for_function("window.__csp.length > 0")
        assert page.evaluate("window.__pwned || null") is None
        violations = page.evaluate("window.__csp")
        assert violations[0]["directive"].startswith("script-src")
        with pytest.raises(AssertionError, match="csp violations"):
            watchdog.assert_clean(page, "after an injection")
    finally:
        context.close()


def test_an_htmx_filter_after_the_session_expired_lands_on_the_login_page_not_inside_the_results(
    chromium, live_server, world
):
    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        log_in(page, "ana", PASSWORD)
        page.goto("/events/")
        page.wait_for_selector("#results")
        context.clear_cookies()  # what an expired session looks like to the server
        page.evaluate("window.__eventsPage = true")  # gone only if the whole window navigates

        page.fill("input[name=operation]", "DisableKey")
        page.press("input[name=operation]", "Enter")
        page.wait_for_url(lambda url: urlsplit(url).path == "/accounts/login/")
        # A whole new login page, not the events page with a login form swapped into #results.
        page.wait_for_selector("input[name=username]")
        assert page.evaluate("window.__eventsPage || null") is None
        assert page.locator("input[name=operation]").count() == 0
        assert page.locator("input[name=username]").count() == 1
        # Back to the page the user was on after logging in again.
        assert parse_qs(urlsplit(page.url).query)["next"] == ["/events/"]
        watchdog.assert_clean(page, "login page after an expired htmx request")

        page.fill("input[name=username]", "ana")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: urlsplit(url).path == "/events/")
    finally:
        context.close()


@pytest.mark.parametrize("path", ["/", "/keys/" + KEY + "/", "/costs/"])
def test_charts_draw_under_a_policy_without_inline_styles_with_plotlys_own_rules_applied(
    chromium, live_server, world, path
):
    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        log_in(page, "boss", PASSWORD)
        response = page.goto(path)
        assert "'unsafe-inline'" not in response.headers["content-security-policy"]
        wait_for_charts(page)
        page.hover(".js-plotly-plot")  # the modebar shows on hover
        state = page.evaluate(
            """() => ({
                svgs: document.querySelectorAll('.js-plotly-plot .main-svg').length,
                styleElements: document.querySelectorAll('style').length,
                modebar: getComputedStyle(document.querySelector('.js-plotly-plot .plotly .modebar')).position,
                font: getComputedStyle(document.querySelector('.js-plotly-plot .plotly')).direction,
            })"""
        )
        # Drawn; no <style> element made (it would be refused); the rules come from the stylesheet.
        assert state["svgs"] >= 1 and state["styleElements"] == 0
        assert (state["modebar"], state["font"]) == ("absolute", "ltr")
        watchdog.assert_clean(page, path)
    finally:
        context.close()


@pytest.mark.parametrize(
    ("path", "label"), [("/", ERROR_LINK.replace(":", "\u2236")), ("/costs/?by=usage_type", UA_IMG)]
)
def test_plotly_draws_hostile_chart_labels_as_their_literal_text_without_links_or_images(
    chromium, live_server, world, path, label
):
    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        log_in(page, "boss", PASSWORD)
        page.goto(path)
        wait_for_charts(page)
        page.wait_for_selector(".js-plotly-plot .legendtext")
        drawn = page.evaluate(
            """() => ({
                legend: Array.from(document.querySelectorAll('.js-plotly-plot .legendtext'), e => e.textContent),
                markup: document.querySelectorAll(['a', 'img', 'image', 'foreignObject'].map(t => '.js-plotly-plot svg ' + t).join()).length,
            })"""
        )
        # plotly.js would draw <a href> in a label as a link: the escaped label shows as typed.
        assert label in drawn["legend"] and drawn["markup"] == 0
        watchdog.assert_clean(page, path)
    finally:
        context.close()
