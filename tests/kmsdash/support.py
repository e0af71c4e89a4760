"""The role x URL matrix and a small seeded world, shared by the security and CSP tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from django.urls import URLPattern, URLResolver, get_resolver

from audits.exports import EXPORT_PERMISSION
from audits.ingest import finish_run, ingest_records, start_run
from audits.models import Event
from audits.synthetic import identity_role, kms_record
from kmsdash.roles import ADMIN, ANALYST, FINANCE

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
LOGIN = "/accounts/login/"


@dataclass(frozen=True)
class Route:
    path: str  # {key}, {event}, {finding}, {alert} and {principal} are filled from the seeded world
    roles: frozenset[str]  # as declared by the view; admin may always open it
    method: str = "get"
    data: dict = field(default_factory=dict)
    ok: int = 200  # the answer for someone allowed
    permission: str = ""  # a permission that opens it without the role


def route(path: str, *roles: str, **options) -> Route:
    return Route(path, frozenset(roles), **options)


MATRIX: dict[str, Route] = {
    "audits:overview": route("/", ANALYST),
    "audits:keys": route("/keys/", ANALYST),
    "audits:key_detail": route("/keys/{key}/", ANALYST),
    "audits:events": route("/events/?operation=Decrypt", ANALYST),
    "audits:event_raw": route("/events/{event}/raw/", ANALYST),
    "audits:critical": route("/critical/", ANALYST),
    "audits:events_export": route("/events/export.csv", ADMIN, method="post", permission=EXPORT_PERMISSION),
    "inventory:findings": route("/findings/", ANALYST),
    "inventory:key_panel": route("/inventory/keys/{key}/", ANALYST),
    "access:key_access": route("/access/keys/{key}/", ANALYST),
    "access:principal": route("/principals/{principal}/", ANALYST),
    "inventory:finding_accept": route(
        "/findings/{finding}/accept/", ADMIN, method="post", data={"reason": "accepted: test key"}, ok=302
    ),
    # The seeded finding is open: an allowed user gets as far as the refusal to revoke what is not accepted.
    "inventory:finding_revoke": route(
        "/findings/{finding}/revoke/", ADMIN, method="post", data={"reason": "no longer"}, ok=409
    ),
    "alerts:list": route("/alerts/?state=all", ANALYST),
    "alerts:detail": route("/alerts/{alert}/", ANALYST),
    "alerts:act": route(
        "/alerts/{alert}/act/", ANALYST, method="post", data={"action": "acknowledge", "comment": "seen"}, ok=302
    ),
    "capacity:overview": route("/capacity/", ANALYST),
    "costs:overview": route("/costs/", FINANCE),
    "costs:export": route("/costs/export.csv", FINANCE, method="post"),
    "health": route("/health/", ADMIN),
    "exports": route("/exports/", ADMIN),
}
# Open to anonymous users: the login page, and the load balancers' health probe.
PUBLIC = {"login", "healthz"}
# Not for people: a bearer token (KMSDASH_METRICS_TOKEN) or nothing, 404 while no token is set.
BEARER_TOKEN = {"metrics"}
# Any signed-in user, whatever the roles (the two-factor pages are for local accounts).
SIGNED_IN = {"logout", "start", "twofactor_setup", "twofactor_verify", "twofactor_qr"}
# Steps of a sign-in through the identity provider: open to anonymous users, 404 unless enabled.
SIGN_IN_FLOW = {"oidc_authentication_init", "oidc_authentication_callback"}
# The Django admin guards itself (is_staff) and is checked model by model below.
ADMIN_NAMESPACE = "admin"

USERS: dict[str, tuple[tuple[str, ...], str]] = {
    "anonymous": ((), ""),
    "no-role": ((), ""),
    "analyst": ((ANALYST,), ""),
    "finance": ((FINANCE,), ""),
    "admin": ((ADMIN,), ""),
    "analyst+finance": ((ANALYST, FINANCE), ""),
    "exporter": ((), EXPORT_PERMISSION),
}


def sent_to_login(response, *, htmx: bool) -> str:
    """The `next` of the login page `response` sends the browser to; fails if it does anything else.

    A plain request gets a 302. An htmx request gets 200 + HX-Redirect, a full navigation for htmx: a
    302 would be followed inside the XMLHttpRequest and the login form swapped into the fragment.
    """
    if htmx:
        assert response.status_code == 200, response.status_code
        assert not response.has_header("Location")
        url = response["HX-Redirect"]
    else:
        assert response.status_code == 302, response.status_code
        url = response["Location"]
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("", "", LOGIN), url
    return parse_qs(parts.query)["next"][0]


def walk(patterns=None, prefix: str = "", namespace: str = ""):
    """(namespace, name with namespace or '' when unnamed, route, view) of every URL pattern."""
    patterns = get_resolver().url_patterns if patterns is None else patterns
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = ":".join(part for part in (namespace, pattern.namespace or "") if part)
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            name = ":".join(part for part in (namespace, pattern.name or "") if part) if pattern.name else ""
            yield namespace, name, prefix + str(pattern.pattern), pattern.callback


def seed_world() -> dict[str, object]:
    """A key with recent calls, an inventory record and an open finding: every page has something."""
    from alerts.models import Alert, Kind
    from inventory.models import Finding, Key

    now = datetime.now(UTC).replace(microsecond=0)
    run = start_run("files")
    records = [
        kms_record(
            event_name=name,
            event_time=now - timedelta(hours=hours),
            key_arn=KEY,
            identity=identity_role(ACCOUNT, "app", "app-1"),
            region="us-east-1",
            recipient_account_id=ACCOUNT,
            error_code="AccessDenied" if name == "DisableKey" else None,
        )
        for hours, name in [(1, "Decrypt"), (2, "Encrypt"), (3, "DisableKey"), (30, "Decrypt")]
    ]
    finish_run(run, ingest_records(records, run=run))
    Key.objects.create(
        arn=KEY,
        key_id=KEY.rsplit("/", 1)[1],
        account_id=ACCOUNT,
        region="us-east-1",
        key_manager="CUSTOMER",
        key_state="Enabled",
        last_seen_at=now,
    )
    finding = Finding.objects.create(
        fingerprint="f" * 64,
        kind=Finding.Kind.ROTATION_DISABLED,
        severity=Finding.Severity.LOW,
        key=KEY,
        account_id=ACCOUNT,
        region="us-east-1",
        summary="Rotation is off",
        first_seen_at=now,
        last_seen_at=now,
    )
    alert = Alert.objects.create(
        kind=Kind.CRITICAL_EVENT,
        severity="high",
        scope_hash="a" * 64,
        account_id=ACCOUNT,
        region="us-east-1",
        key=KEY,
        subject="DisableKey",
        first_event=now,
        last_event=now,
        detected_at=now,
        updated=now,
        count=1,
        summary="DisableKey on the key",
    )
    return {
        "key": KEY,
        "event": Event.objects.earliest("id").pk,
        "finding": finding.pk,
        "alert": alert.pk,
        "principal": f"arn:aws:iam::{ACCOUNT}:role/app",  # the caller of the seeded events
    }
