"""What a critical change did, said in words on every list of critical events: the critical page,
the overview's card and the key page (issue: the waiting period of a deletion, the alias and its
new target, whether a new key policy lets in another account or "*", a grant's grantee)."""

from __future__ import annotations

import json
from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse

from tests.audits.support import K1, K2, NOW, A, ingest, record

pytestmark = pytest.mark.django_db

OUTSIDER = "999988887777"


def policy(*principals: str) -> str:
    return json.dumps(
        {
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": p}, "Action": "kms:Decrypt", "Resource": "*"}
                for p in principals
            ]
        }
    )


EXPECTED = {
    "deletion": "deletion after 7 days, on 2026-11-27T11:00:00Z",
    "alias": f"alias/payments now points to {K2}",
    "public": 'the policy lets in any AWS principal ("*") without an account or organisation condition',
    "foreign": f"the policy lets in account {OUTSIDER}, not configured here",
    "own": "the policy lets in no other account",
    "grant": f"grants Decrypt, Encrypt to arn:aws:iam::{OUTSIDER}:role/outside (account {OUTSIDER} is not configured here)",
}


@pytest.fixture
def changes(pages_now):
    def at(minutes: int):
        return NOW - timedelta(minutes=minutes)

    ingest(
        [
            record(
                "ScheduleKeyDeletion",
                when=at(10),
                request_parameters={"keyId": K1, "pendingWindowInDays": 7},
                response_elements={"keyId": K1, "deletionDate": "2026-11-27T11:00:00Z"},
            ),
            record("UpdateAlias", when=at(11), request_parameters={"aliasName": "alias/payments", "targetKeyId": K2}),
            record("PutKeyPolicy", when=at(12), request_parameters={"keyId": K1, "policy": policy("*")}),
            record(
                "PutKeyPolicy",
                when=at(13),
                request_parameters={"keyId": K1, "policy": policy(f"arn:aws:iam::{OUTSIDER}:root")},
            ),
            record(
                "PutKeyPolicy",
                when=at(14),
                request_parameters={"keyId": K1, "policy": policy(f"arn:aws:iam::{A}:root")},
            ),
            record(
                "CreateGrant",
                when=at(15),
                request_parameters={
                    "keyId": K1,
                    "granteePrincipal": f"arn:aws:iam::{OUTSIDER}:role/outside",
                    "operations": ["Decrypt", "Encrypt"],
                },
            ),
        ]
    )


@pytest.mark.parametrize(
    ("name", "args", "params"),
    [
        ("audits:critical", [], {}),
        ("audits:overview", [], {"period": "24h"}),
        ("audits:key_detail", [K1], {"period": "24h"}),
    ],
    ids=["critical-page", "overview-card", "key-page"],
)
def test_each_list_of_critical_events_says_what_the_change_did(pages_analyst, changes, name, args, params):
    response = pages_analyst.get(reverse(name, args=args), params)
    rows = response.context["rows" if name == "audits:critical" else "critical"]
    html = unescape(response.content.decode())
    for what, text in EXPECTED.items():
        assert text in html, (name, what)
    # Each row has its own account of the change, next to its class.
    assert sorted(text for _, _, text in rows) == sorted(EXPECTED.values())
    assert {e.event_name: cls for e, cls, _ in rows} == {
        "ScheduleKeyDeletion": "destructive",
        "UpdateAlias": "lifecycle",
        "PutKeyPolicy": "access-changing",
        "CreateGrant": "access-changing",
    }
    assert 'data-class="destructive"' in html and 'class="tag class-access-changing"' in html


def test_a_change_text_from_the_record_stays_text_on_the_overview_card(pages_analyst, pages_now):
    hostile = "<img src=x onerror=alert(1)>"
    ingest([record("UpdateAlias", request_parameters={"aliasName": "alias/x", "targetKeyId": hostile})])
    html = pages_analyst.get(reverse("audits:overview"), {"period": "24h"}).content.decode()
    assert hostile not in html
    assert "alias/x now points to &lt;img src=x onerror=alert(1)&gt;" in html
