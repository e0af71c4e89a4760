"""One label for a key on every page: alias and short id, the ARN on hover, a copy button, one link."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alerts.models import Alert, Kind
from alerts.services import evaluate
from audits.keyurls import principal_url
from audits.templatetags.kmsdash_tags import key_url, short_id
from inventory.models import Alias, Finding, Key
from tests.audits.support import K1, K2, NOW, A, ingest, record
from tests.support import make_user

pytestmark = pytest.mark.django_db


def name_key(arn: str, alias: str) -> None:
    account, region = arn.split(":")[4], arn.split(":")[3]
    key = Key.objects.create(arn=arn, key_id=arn.rsplit("/", 1)[1], account_id=account, region=region, last_seen_at=NOW)
    Alias.objects.create(
        arn=f"arn:aws:kms:{region}:{account}:{alias}",
        name=alias,
        account_id=account,
        region=region,
        key=key,
        last_seen_at=NOW,
    )


def labels(html: str, arn: str) -> set[str]:
    """Every label of `arn` on a page, as markup."""
    found = set()
    for match in re.finditer(r'<span class="key-label">', html):
        end = html.index("</button></span>", match.start()) + len("</button></span>")
        chunk = html[match.start() : end]
        if f'title="{arn}"' in chunk:
            found.add(chunk)
    return found


def test_short_id_keeps_eight_characters_of_the_key_id():
    assert short_id(K1) == "11111111…"
    assert short_id("arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd5678ef901234abcd5678ef90") == "mrk-1234abcd…"
    assert short_id("alias/payments") == "alias/payments"
    assert short_id("alias/a\u202eb") == "alias/a⟨U+202E⟩b"


@pytest.fixture
def named(pages_now):
    ingest(
        [
            record("Decrypt", key=K1),
            record("DisableKey", key=K1, when=NOW - timedelta(minutes=5)),
            record("Encrypt", key=K2, region="eu-west-1"),
        ]
    )
    name_key(K1, "alias/payments")
    Finding.objects.create(
        fingerprint="a" * 64,
        kind=Finding.Kind.ROTATION_DISABLED,
        severity="high",
        key=K1,
        account_id=A,
        region="us-east-1",
        summary="rotation off",
        first_seen_at=NOW,
        last_seen_at=NOW,
    )


def test_a_key_has_the_same_label_on_every_page(client, named):
    client.force_login(make_user("boss", "admin"))
    expected = (
        f'<span class="key-label"><a href="{key_url(K1)}" title="{K1}"><span class="key-alias">alias/payments</span> '
        f'<span class="key-id">11111111…</span></a><button type="button" class="copy" data-copy="{K1}" '
        'title="Copy the key ARN" aria-label="Copy the key ARN">copy</button></span>'
    )
    pages = {
        "overview": reverse("audits:overview"),
        "keys": reverse("audits:keys"),
        "key page": reverse("audits:key_detail", args=[K1]),
        "events": reverse("audits:events"),
        "critical": reverse("audits:critical"),
        "findings": reverse("inventory:findings"),
        "costs": reverse("costs:overview"),
        "principal": principal_url(f"arn:aws:iam::{A}:role/app"),
    }
    evaluate()  # the DisableKey's critical-event alert, for the alert pages
    alert = Alert.objects.get(kind=Kind.CRITICAL_EVENT)
    pages |= {"alerts": reverse("alerts:list"), "alert": reverse("alerts:detail", args=[alert.pk])}
    for name, url in pages.items():
        html = client.get(url).content.decode()
        assert labels(html, K1) == {expected}, name
    # A key without an alias: its short id alone, the same way.
    events = client.get(reverse("audits:events")).content.decode()
    (k2,) = labels(events, K2)
    assert '<span class="key-id">22222222…</span></a>' in k2 and "key-alias" not in k2


def test_an_alert_names_its_key_by_the_label_not_by_the_arn_a_second_time(client, named):
    client.force_login(make_user("ana", "analyst"))
    evaluate()
    alert = Alert.objects.get(kind=Kind.CRITICAL_EVENT)
    assert K1 in alert.summary  # the stored summary (notifications) keeps the ARN
    for url in (reverse("alerts:list"), reverse("alerts:detail", args=[alert.pk])):
        html = client.get(url).content.decode()
        assert f"DisableKey on alias/payments (11111111…) by arn:aws:iam::{A}:role/app" in html, url
        rest = html
        for label in labels(html, K1):
            rest = rest.replace(label, "")
        assert K1 not in rest, url


def test_a_summary_naming_a_key_stays_text(pages_analyst, pages_now):
    from django.template import Context, Template

    hostile = "<img src=x onerror=alert(1)>\u202e"
    html = Template("{% load kmsdash_tags %}{% naming_key text key %}").render(
        Context({"text": f"{hostile} on {K1}", "key": K1, "key_aliases": {K1: "alias/<b>x</b>"}})
    )
    assert html == "&lt;img src=x onerror=alert(1)&gt;⟨U+202E⟩ on alias/&lt;b&gt;x&lt;/b&gt; (11111111…)"


def test_finance_sees_the_label_without_a_link_to_the_analysts_pages(client, named):
    client.force_login(make_user("fin", "finance"))
    html = client.get(reverse("costs:overview")).content.decode()
    (label,) = labels(html, K1)
    assert "<a " not in label and "alias/payments" in label and f'data-copy="{K1}"' in label


def test_a_hostile_alias_or_key_stays_text_in_the_label(pages_analyst, pages_now):
    ingest([record(key=K1)])
    name_key(K1, 'alias/"><svg/onload=alert(1)>\u202e')
    html = pages_analyst.get(reverse("audits:events")).content.decode()
    assert "<svg" not in html and "\u202e" not in html
    assert "alias/&quot;&gt;&lt;svg/onload=alert(1)&gt;⟨U+202E⟩" in html


def test_aliases_are_read_once_per_page_however_many_keys_it_shows(pages_analyst, pages_now):
    def arn(n: int) -> str:
        return f"arn:aws:kms:us-east-1:{A}:key/{n:08d}-1111-4111-8111-111111111111"

    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert pages_analyst.get(url).status_code == 200
        return len(captured)

    def found(n: int) -> None:
        Finding.objects.create(
            fingerprint=f"{n:064d}",
            kind=Finding.Kind.UNUSED_KEY,
            severity="low",
            key=arn(n),
            account_id=A,
            region="us-east-1",
            summary="idle",
            first_seen_at=NOW,
            last_seen_at=NOW,
        )

    ingest([record(key=arn(n)) for n in range(2)])
    for n in range(2):
        name_key(arn(n), f"alias/k{n}")
        found(n)
    pages = ("audits:events", "audits:keys", "audits:overview", "audits:critical", "inventory:findings")
    few = {name: queries(reverse(name)) for name in pages}
    ingest([record(key=arn(n), when=NOW - timedelta(minutes=n + 2)) for n in range(2, 40)])
    for n in range(2, 40):
        name_key(arn(n), f"alias/k{n}")
        found(n)
    many = {name: queries(reverse(name)) for name in few}
    assert many == few
    for name in ("audits:events", "inventory:findings"):
        html = pages_analyst.get(reverse(name)).content.decode()
        assert "alias/k39" in html and "alias/k0" in html, name
