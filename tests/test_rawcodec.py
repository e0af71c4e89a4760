"""The stored form of raw records: lossless, compact, and readable forever once written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audits import rawcodec
from audits.synthetic import generate_records

FIXTURE = Path(__file__).parent / "fixtures" / "kms_cloudtrail_examples.json"
EXAMPLES = [example["record"] for example in json.loads(FIXTURE.read_text())]

# Written by version 1 of the codec. Rows stored years ago must stay readable, so this blob must
# decode to the same record whatever dictionaries are added later.
V1_BLOB = bytes.fromhex(
    "01abc62c2b0d0da99427534b75cb53a1791291da92cc8d8dd2cc2c4d74932ccccc744d0ccd5375138dcc0c7453928c93cd52"
    "cd8c2c0d538cd0f26b7262dae1950a8f1ad629e1480f2640600a046640803d35e3cb11b8723a513933493f1f58f4d50200"
)
V1_RECORD = {
    "eventVersion": "1.11",
    "eventSource": "kms.amazonaws.com",
    "eventName": "Decrypt",
    "awsRegion": "eu-west-1",
    "eventID": "b732f694-b866-417e-a260-db3c6e6291d2",
    "userAgent": "caf\u00e9 \u202e",
    "recipientAccountId": "444455556666",
    "readOnly": True,
    "responseElements": None,
    "requestParameters": {"encryptionContext": {"aws:s3:arn": "arn:aws:s3:::b/o"}},
}

# Any JSON value but lone surrogates, which cannot be stored as UTF-8 (see the test below).
json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(st.characters(exclude_categories=["Cs"]))
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def synthetic(n: int) -> list[dict]:
    return list(generate_records(n, seed=5, start=datetime(2026, 1, 1, tzinfo=UTC), days=7))


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda record: record["eventName"])
def test_every_aws_example_record_comes_back_exactly(record):
    assert rawcodec.decode(rawcodec.encode(record)) == record


@given(st.dictionaries(st.text(max_size=20), json_values, max_size=8))
def test_any_json_object_comes_back_exactly(record):
    assert rawcodec.decode(rawcodec.encode(record)) == record


def test_a_blob_written_by_version_1_still_decodes():
    assert V1_BLOB[0] == 1
    assert rawcodec.decode(V1_BLOB) == V1_RECORD
    assert rawcodec.decode(memoryview(V1_BLOB)) == V1_RECORD  # as PostgreSQL's bytea arrives


def test_encoding_serialised_text_stores_the_same_bytes_as_encoding_the_record():
    for record in [*EXAMPLES, *synthetic(50), V1_RECORD]:
        text = rawcodec.dumps(record)
        assert rawcodec.encode_text(text) == rawcodec.encode(record)
        assert rawcodec.encode_text(text.encode("utf-8")) == rawcodec.encode(record)


def test_the_text_stored_is_the_compact_json_of_the_record():
    record = {"a": [1, {"b": None}], "é": "\u202e\x00"}
    assert rawcodec.dumps(record) == json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def test_every_new_blob_names_the_current_dictionary():
    assert rawcodec.encode(V1_RECORD)[0] == rawcodec.CURRENT
    assert rawcodec.CURRENT in rawcodec._DICTS


def test_a_lone_surrogate_is_stored_as_a_replacement_character_rather_than_failing():
    decoded = rawcodec.decode(rawcodec.encode({"userAgent": "a\ud800b"}))
    assert decoded == {"userAgent": "a?b"}


def test_a_typical_record_is_stored_in_under_a_quarter_of_its_json_size():
    records = synthetic(300)
    text_size = sum(len(rawcodec.dumps(r).encode()) for r in records)
    stored = sum(len(rawcodec.encode(r)) for r in records)
    # The preset dictionary is what gets a 1.4 KB record this small; plain zlib stores ~50%.
    assert stored < text_size / 4
    assert stored / len(records) < 340
