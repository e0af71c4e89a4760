"""The pages as an analyst reads them, in a real browser: findings by severity, one label per key,
compact explorer rows with hostile long values, a clean console everywhere, and screenshots of every
page in tests/browser/screenshots/ (git-ignored) for people to look at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from audits.ingest import finish_run, ingest_records, start_run
from audits.models import Source
from audits.synthetic import generate_records, identity_role, kms_record
from tests.browser.support import log_in, new_page, screenshot
from tests.support import PASSWORD, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/abcd1234-12ab-34cd-56ef-1234567890ab"
ALIAS = "alias/payments"
ROW_HEIGHT_LIMIT = 48  # pixels: two lines of text and the cell padding

LONG_UA = (
    "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64 "
    + "prompt/off command/kms.decrypt " * 30
    + "<img src=x onerror=alert(1)>"
)
# Hostile text at the start of a long value, so that it is in the cut text a row shows.
HOSTILE_UA = "<img src=x onerror=alert(1)>\u202e" + " Mozilla/5.0 (X11; Linux x86_64)" * 20
LONG_ROLE = "a-role-with-a-very-long-name-" * 2 + "\u202etxt.exe"
LONG_SESSION = "session-" * 8
LONG_ERROR = (
    "User: arn:aws:sts::111122223333:assumed-role/x/y is not authorized to perform: kms:Decrypt " * 8
    + "</script><script>alert(1)</script>"
)

# (name, path, draws charts, roles that may open it); {alert} and {principal} come from the world.
ANALYST_ROLES = ("admin", "analyst")
PAGES = [
    ("overview", "/", True, ANALYST_ROLES),
    ("overview-24h", "/?period=24h", True, ANALYST_ROLES),
    ("keys", "/keys/", False, ANALYST_ROLES),
    ("key", f"/keys/{KEY}/", True, ANALYST_ROLES),
    ("key-24h", f"/keys/{KEY}/?period=24h", True, ANALYST_ROLES),
    ("principal", "{principal}", False, ANALYST_ROLES),
    ("events", "/events/", False, ANALYST_ROLES),
    ("critical", "/critical/", False, ANALYST_ROLES),
    ("alerts", "/alerts/?state=all", False, ANALYST_ROLES),
    ("alert", "{alert}", True, ANALYST_ROLES),
    ("findings", "/findings/", False, ANALYST_ROLES),
    ("capacity", "/capacity/", False, ANALYST_ROLES),
    ("costs", "/costs/", True, ("admin", "finance")),
    ("health", "/health/", False, ("admin",)),
    ("exports", "/exports/", False, ("admin",)),
    ("admin", "/admin/", False, ("admin",)),
]
LABELLED = [
    "overview",
    "keys",
    "key",
    "principal",
    "events",
    "critical",
    "alerts",
    "alert",
    "findings",
    "capacity",
    "costs",
]
USERS = {"admin": "boss", "analyst": "ana", "finance": "fin"}


@pytest.fixture
def world(chromium):
    from inventory.models import Alias, Finding, Key

    now = datetime.now(UTC).replace(microsecond=0)

    def record(minutes: int, **fields) -> dict:
        base = {
            "event_name": "Decrypt",
            "event_time": now - timedelta(minutes=minutes),
            "key_arn": KEY,
            "identity": identity_role(ACCOUNT, LONG_ROLE, LONG_SESSION),
            "region": "us-east-1",
            "recipient_account_id": ACCOUNT,
            "user_agent": LONG_UA,
        }
        base.update(fields)
        return kms_record(**base)

    records = [record(10 + n, error_code="AccessDenied", error_message=LONG_ERROR) for n in range(10)]
    # The busiest minutes on the key: the capacity page names it among the callers of the peak
    # minutes (DescribeKey's quota is the one this world comes closest to) and the data-key cache's.
    records += [record(25) for _ in range(40)]
    records += [record(26, event_name="DescribeKey") for _ in range(40)]
    records += [
        record(20, user_agent=HOSTILE_UA),
        record(30, event_name="DisableKey"),
        record(
            31,
            event_name="ScheduleKeyDeletion",
            request_parameters={"keyId": KEY, "pendingWindowInDays": 7},
        ),
    ]
    records += list(generate_records(300, seed=3, start=now - timedelta(days=5), days=5))
    run = start_run("files")
    finish_run(run, ingest_records(records, run=run))

    key = Key.objects.create(
        arn=KEY,
        key_id=KEY.rsplit("/", 1)[1],
        account_id=ACCOUNT,
        region="us-east-1",
        key_manager="CUSTOMER",
        key_state="Enabled",
        last_seen_at=now,
    )
    Alias.objects.create(
        arn=f"arn:aws:kms:us-east-1:{ACCOUNT}:{ALIAS}",
        name=ALIAS,
        account_id=ACCOUNT,
        region="us-east-1",
        key=key,
        last_seen_at=now,
    )
    # Listed by kind name, "policy-public" would sit between the others; by severity it leads.
    for n, (kind, severity, age) in enumerate(
        [
            (Finding.Kind.UNUSED_KEY, "low", 1),
            (Finding.Kind.ROTATION_DISABLED, "medium", 2),
            (Finding.Kind.POLICY_PUBLIC, "critical", 30),
            (Finding.Kind.GRANT_CROSS_ACCOUNT, "high", 3),
            (Finding.Kind.NEW_PRINCIPAL, "info", 0),
        ]
    ):
        Finding.objects.create(
            fingerprint=f"{n:064d}",
            kind=kind,
            severity=severity,
            key=KEY,
            account_id=ACCOUNT,
            region="us-east-1",
            summary=f"{kind} on the key",
            first_seen_at=now - timedelta(hours=age),
            last_seen_at=now,
        )
    # The alerts the key's deletion and disabling raise, for the alert pages.
    from alerts.models import Alert, Kind
    from alerts.services import evaluate
    from audits.keyurls import principal_url
    from audits.models import Event

    evaluate()
    alert = Alert.objects.get(kind=Kind.CRITICAL_EVENT, subject="ScheduleKeyDeletion")
    principal = Event.objects.filter(key=KEY, event_name="Decrypt").values_list("principal", flat=True).first()
    for role, username in USERS.items():
        make_user(username, role)
    return {"now": now, "paths": {"alert": f"/alerts/{alert.pk}/", "principal": principal_url(principal)}}


def pages(world, role: str = "admin", names: list[str] | None = None) -> list[tuple[str, str, bool]]:
    """The pages `role` may open (only `names`, if given), with the world's paths filled in."""
    return [
        (name, path.format(**world["paths"]), charts)
        for name, path, charts, roles in PAGES
        if role in roles and (names is None or name in names)
    ]


def visit(page, name: str, path: str, charts: bool) -> None:
    page.goto(path)
    page.wait_for_load_state("networkidle")
    if charts:
        page.wait_for_selector(".js-plotly-plot .main-svg", state="attached")
    if name in ("key", "key-24h"):
        page.wait_for_selector("#inventory-panel h2")
        page.wait_for_selector("#access-panel h2")


def failed_responses(page) -> list[str]:
    failures: list[str] = []
    page.on("response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return failures


@pytest.mark.parametrize("role", ["admin", "analyst", "finance"])
def test_every_page_loads_without_a_console_error_or_a_failed_request_and_is_photographed(
    chromium, live_server, world, role
):
    context, page, watchdog = new_page(chromium, live_server.url)
    failures = failed_responses(page)
    try:
        log_in(page, USERS[role], PASSWORD)
        visited = pages(world, role)
        assert visited, role
        for name, path, charts in visited:
            visit(page, name, path, charts)
            icon = page.evaluate(
                "document.querySelector('link[rel=icon]') && document.querySelector('link[rel=icon]').href"
            )
            assert icon and "/static/kmsdash/favicon" in icon, name
            for panel in ("#latest-critical", "#top-keys") if name.startswith("overview") else ():
                # The lists' columns fit their panels: no key label or count pushed out of view.
                width = page.evaluate(
                    "el => ({scroll: el.scrollWidth, client: el.clientWidth,"
                    " columns: Array.from(el.querySelectorAll('thead th'), th => th.getBoundingClientRect().width)})",
                    page.query_selector(panel),
                )
                assert width["scroll"] <= width["client"], (name, panel, width)
            screenshot(page, f"reading-{role}-{name}")
            watchdog.assert_clean(page, name)
            assert watchdog.console_errors == [], (name, watchdog.console_errors)
            assert failures == [], (name, failures)
        assert page.request.get(icon).ok
    finally:
        context.close()


def test_the_overview_and_the_key_page_chart_calls_per_hour_for_a_day_and_a_week_and_per_day_beyond(
    chromium, live_server, world
):
    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        log_in(page, "ana", PASSWORD)
        for path, hourly in (("/", "#fig-hourly"), (f"/keys/{KEY}/", "#fig-key-hourly")):
            for period, shown in (("24h", True), ("7d", True), ("30d", False), ("90d", False)):
                page.goto(f"{path}?period={period}")
                page.wait_for_selector(".js-plotly-plot .main-svg", state="attached")
                if not shown:
                    assert page.locator(hourly).count() == 0, (path, period)
                    continue
                page.wait_for_selector(f"{hourly} .main-svg", state="attached")
                # One bar per hour that had calls, on an hour axis: the night's calls are readable.
                ticks = page.evaluate("sel => document.querySelector(sel).data[0].x", f"{hourly}")
                assert ticks and all(len(t) == 16 and t.endswith(":00") for t in ticks), (path, period, ticks)
            watchdog.assert_clean(page, path)
    finally:
        context.close()


def test_findings_start_with_the_highest_severity(chromium, live_server, world):
    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        log_in(page, "boss", PASSWORD)
        page.goto("/findings/")
        severities = page.locator("#findings-results tbody tr td:first-child .sev").all_inner_texts()
        assert severities == ["critical", "high", "medium", "low", "info"]
        # A column sort still works, and a second click reverses it.
        page.click("#findings-results th a:has-text('Kind')")
        page.wait_for_url(lambda url: "sort=kind" in url)
        kinds = page.locator("#findings-results tbody tr td:nth-child(2)").all_inner_texts()
        assert kinds == sorted(kinds)
        page.click("#findings-results th a:has-text('Kind')")
        page.wait_for_url(lambda url: "sort=-kind" in url)
        page.wait_for_function(
            "first => document.querySelector('#findings-results tbody tr td:nth-child(2)').innerText !== first",
            arg=kinds[0],
        )
        assert page.locator("#findings-results tbody tr td:nth-child(2)").all_inner_texts() == sorted(
            kinds, reverse=True
        )
        watchdog.assert_clean(page, "findings")
    finally:
        context.close()


def labels_on(page, names, world) -> tuple[dict[str, set[str]], set[str | None]]:
    """Each page's labels of KEY (their text) and their links; no page writes the ARN out besides."""
    seen: dict[str, set[str]] = {}
    links: set[str | None] = set()
    for name, path, charts in names:
        visit(page, name, path, charts)
        # The ARN is the label's title and its copy button's value, not visible text (the raw
        # drawer, closed here, shows the record as it is).
        if name != "key":  # the key's own page writes its ARN under its name
            # Neither the ARN nor the bare key id (the label shows its first 8 characters).
            assert KEY.rsplit("/", 1)[1] not in page.inner_text("main"), name
        labels = page.locator(f'.key-label:has([title="{KEY}"])')
        assert labels.count() >= 1, name
        seen[name] = {" ".join(text.split()) for text in labels.all_inner_texts()}
        links |= {
            labels.nth(i).locator("a").get_attribute("href") if labels.nth(i).locator("a").count() else None
            for i in range(labels.count())
        }
    return seen, links


def test_a_key_shows_the_same_label_on_every_page_and_copies_its_arn(chromium, live_server, world):
    context, page, watchdog = new_page(chromium, live_server.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    try:
        log_in(page, "boss", PASSWORD)
        seen, links = labels_on(page, pages(world, "admin", LABELLED), world)
        assert set(seen) == set(LABELLED)
        assert set().union(*seen.values()) == {f"{ALIAS} abcd1234… copy"}, seen
        assert links == {f"/keys/{KEY}/"}
        page.goto("/events/")
        page.locator(f'.key-label:has([title="{KEY}"]) button.copy').first.click()
        page.wait_for_selector("button.copy.copied")
        assert page.evaluate("navigator.clipboard.readText()") == KEY
        watchdog.assert_clean(page, "events after a copy")
    finally:
        context.close()


def test_finance_sees_the_same_key_label_without_a_link_to_pages_it_may_not_open(chromium, live_server, world):
    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        log_in(page, "fin", PASSWORD)
        seen, links = labels_on(page, pages(world, "finance", LABELLED), world)
        assert set(seen) == {"costs"}
        assert seen["costs"] == {f"{ALIAS} abcd1234… copy"}
        assert links == {None}
        watchdog.assert_clean(page, "costs as finance")
    finally:
        context.close()


def test_explorer_rows_stay_compact_with_hostile_long_values(chromium, live_server, world):
    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        log_in(page, "boss", PASSWORD)
        page.goto(f"/events/?key={KEY}")
        rows = page.locator("#results tbody tr")
        assert rows.count() >= 12
        heights = page.evaluate(
            "Array.from(document.querySelectorAll('#results tbody tr')).map(r => r.getBoundingClientRect().height)"
        )
        assert max(heights) < ROW_HEIGHT_LIMIT, heights
        # The cut text keeps the visible bidi marker; the whole value is in the title and the drawer.
        principal = page.locator("#results tbody tr").first.locator("td:nth-child(4) .cut").first
        assert "⟨U+202E⟩txt.exe" in principal.get_attribute("title")
        assert "⟨U+202E⟩txt.exe" in principal.inner_text()  # the marker is in the cut text too
        # Hostile markup at the start of a value is the row's text, with its bidi marker shown.
        hostile = page.locator("#results td.ua .cut", has_text="<img src=x")
        assert hostile.count() == 1
        assert hostile.inner_text().startswith("<img src=x onerror=alert(1)>⟨U+202E⟩ Mozilla/5.0")
        assert hostile.get_attribute("title").startswith("<img src=x onerror=alert(1)>⟨U+202E⟩")
        assert hostile.locator("img").count() == 0
        agent = page.locator("#results tbody tr").first.locator("td.ua .cut")
        assert agent.get_attribute("title").startswith("aws-cli/2.15.0")
        assert agent.evaluate("el => el.scrollWidth > el.clientWidth")  # cut, not wrapped
        screenshot(page, "reading-events-by-key")
        page.locator("#results button:has-text('Raw')").first.click()
        page.wait_for_selector("#drawer pre.raw")
        assert "<img src=x onerror=alert(1)>" in page.inner_text("#drawer .facts")
        assert "⟨U+202E⟩txt.exe" in page.inner_text("#drawer .facts")
        screenshot(page, "reading-events-drawer")
        watchdog.assert_clean(page, "events with long values")
    finally:
        context.close()


@pytest.mark.parametrize("role", ["admin", "analyst", "finance"])
def test_a_first_run_says_what_is_happening_on_every_page(chromium, live_server, world, role):
    Source.objects.create(account_id="444455556666", regions=["eu-west-1"])
    from audits.models import Checkpoint

    Checkpoint.objects.all().delete()
    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        log_in(page, USERS[role], PASSWORD)
        for name, path, charts in pages(world, role):
            if name == "admin":
                continue  # Django's own admin pages carry no notice
            visit(page, name, path, charts)
            notice = page.locator("#first-run")
            assert notice.count() == 1, name
            assert "The first ingestion is queued" in notice.inner_text(), name
            assert notice.is_visible(), name
            if name == "costs":
                assert "Cost Explorer has not been read yet" in page.inner_text("#costs-first-run")
            screenshot(page, f"reading-first-run-{role}-{name}")
            watchdog.assert_clean(page, f"first run {name}")
            assert watchdog.console_errors == [], name
    finally:
        context.close()


def test_the_critical_view_hides_routine_service_grants_but_not_a_grant_to_another_account(
    chromium, live_server, world
):
    now = world["now"]
    service_role = identity_role(ACCOUNT, "autoscaling", "s", invoked_by="autoscaling.amazonaws.com")
    outsider = "arn:aws:iam::999988887777:role/outside"
    records = [
        kms_record(
            event_name=name,
            event_time=now - timedelta(minutes=5 + n),
            key_arn=KEY,
            identity=service_role,
            region="us-east-1",
            recipient_account_id=ACCOUNT,
        )
        for n, name in enumerate(["CreateGrant", "RetireGrant", "CreateGrant"])
    ]
    records.append(
        kms_record(
            event_name="CreateGrant",
            event_time=now - timedelta(minutes=2),
            key_arn=KEY,
            identity=identity_role(ACCOUNT, "admin-person", "jane"),
            region="us-east-1",
            recipient_account_id=ACCOUNT,
            request_parameters={"keyId": KEY, "granteePrincipal": outsider, "operations": ["Decrypt"]},
        )
    )
    run = start_run("files")
    finish_run(run, ingest_records(records, run=run))

    context, page, watchdog = new_page(chromium, live_server.url)
    try:
        log_in(page, "boss", PASSWORD)
        page.goto("/critical/?period=24h")
        rows = page.locator("#results tbody tr")
        classes = rows.evaluate_all("rows => rows.map(r => r.dataset.class)")
        assert "routine" not in classes
        grant = page.locator("#results tbody tr[data-class=access-changing]", has_text=outsider)
        assert grant.count() == 1
        assert "not configured here" in grant.inner_text()
        note = page.locator(".routine-note")
        assert "routine service grants in this period hidden" in note.inner_text()
        screenshot(page, "reading-critical-default")
        with page.expect_response(lambda r: "routine=1" in r.url):
            note.get_by_role("link", name="Show them").click()
        page.wait_for_selector("#results tbody tr[data-class=routine]")
        assert "routine=1" in page.url
        assert page.locator("#results tbody tr[data-class=routine]").count() >= 3
        watchdog.assert_clean(page, "critical")
        assert watchdog.console_errors == []
    finally:
        context.close()
