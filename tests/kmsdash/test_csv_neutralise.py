"""CSV formula neutralisation behind invisible characters and for the fullwidth triggers."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kmsdash.csvexport import neutralize, neutralize_text
from tests.support import make_user

# What a spreadsheet may skip or ignore before a cell's first visible character.
INVISIBLE = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u00ad",
    "\u180e",
    " ",
    "\u00a0",
    "\u2003",
    "\u3000",
    "\x0b",
    "\x0c",
    "\x1c",
]
ASCII_TRIGGERS = list("=+-@\t\r\n\0")
FULLWIDTH_TRIGGERS = ["\uff1d", "\uff0b", "\uff0d", "\uff20", "\ufe66", "\ufe62", "\ufe63", "\ufe6b"]
TRIGGERS = ASCII_TRIGGERS + FULLWIDTH_TRIGGERS

invisible = st.text(st.sampled_from(INVISIBLE), max_size=6)
anything = st.text(max_size=30)
# Neither a trigger nor anything invisible (nor the minus sign, which also counts as one).
inert_first = st.characters(blacklist_categories=("Cf", "Cs")).filter(
    lambda c: c not in TRIGGERS and not c.isspace() and c != "\u2212"
)


@given(invisible, st.sampled_from(TRIGGERS), anything)
def test_a_trigger_after_any_invisible_characters_gets_the_apostrophe(prefix, trigger, rest):
    value = prefix + trigger + rest
    assert neutralize_text(value) == "'" + value == neutralize(value)


@given(invisible, inert_first, anything)
def test_a_cell_whose_first_visible_character_is_no_trigger_is_kept_verbatim(prefix, first, rest):
    value = prefix + first + rest
    assert neutralize_text(value) == value == neutralize(value)


@pytest.mark.parametrize(
    "value",
    ["\u200b=1+1", "\ufeff@SUM(1)", "\uff1d1+1", "\u200d\u00a0\uff0d2", "\u2060\u200b+cmd", "\uff20A1", "\u00ad-1"],
)
def test_the_reviewed_cases_are_neutralised(value):
    assert neutralize(value) == "'" + value


@pytest.mark.django_db
def test_the_event_export_neutralises_them_in_every_text_column(client):

    from audits.ingest import finish_run, ingest_records, start_run
    from audits.synthetic import identity_role, kms_record

    hostile = {"user_agent": '\u200b=HYPERLINK("http://evil")', "session": "\ufeff@SUM(1)", "error": "\uff1d1+1"}
    run = start_run("files")
    record = kms_record(
        event_name="Decrypt",
        event_time=datetime(2026, 11, 2, tzinfo=UTC),
        key_arn="arn:aws:kms:us-east-1:111122223333:key/k",
        region="us-east-1",
        recipient_account_id="111122223333",
        identity=identity_role("111122223333", "app", hostile["session"]),
        user_agent=hostile["user_agent"],
        error_code="AccessDenied",
        error_message=hostile["error"],
    )
    finish_run(run, ingest_records([record], run=run))
    client.force_login(make_user("adm", "admin"))
    response = client.post("/events/export.csv", {"since": "2026-11-01"})
    (row,) = csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode(), newline=""))
    assert row["user_agent"] == "'" + hostile["user_agent"]
    assert row["session_name"] == "'" + hostile["session"]
    assert row["error_message"] == "'" + hostile["error"]
