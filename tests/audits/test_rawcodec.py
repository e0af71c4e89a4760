"""The stored form of raw records: lossless, compact, and readable forever once written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from hypothesis import given
from hypothesis import strategies as st

from audits import partitions, rawcodec
from audits.ingest import ingest_records, start_run
from audits.models import Event, RawBlock
from audits.synthetic import generate_records

FIXTURE = Path(__file__).parent / "fixtures" / "kms_cloudtrail_examples.json"
EXAMPLES = [example["record"] for example in json.loads(FIXTURE.read_text())]

# Written by version 1 of the codec (one zlib blob per event). Migration 0006 must carry such rows
# into blocks without losing a byte of the record.
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


def roundtrip(records: list[dict]) -> list[dict | None]:
    blob = rawcodec.encode_block([rawcodec.dumps(r) for r in records])
    return [rawcodec.record_at(blob, i) for i in range(len(records))]


def test_every_aws_example_record_comes_back_exactly_from_one_block():
    assert roundtrip(EXAMPLES) == EXAMPLES


@given(st.lists(st.dictionaries(st.text(max_size=20), json_values, max_size=8), min_size=1, max_size=5))
def test_any_json_objects_come_back_exactly(records):
    assert roundtrip(records) == records


def test_the_text_stored_is_the_compact_json_of_the_record():
    record = {"a": [1, {"b": None}], "é": "\u202e\x00\n", "f": 1.5}
    assert json.loads(rawcodec.dumps(record)) == record
    assert b"\n" not in rawcodec.dumps(record)  # newlines separate the records of a block


def test_a_lone_surrogate_is_stored_as_a_replacement_character_rather_than_failing():
    # U+FFFD, as audits.cloudtrail cleans the event's columns, not '?' (text the record could hold).
    record = json.loads('{"userAgent": "a\\ud800b", "\\udfff": ["\\ud83d\\ude00", "\\udc00\\ud800"]}')
    assert roundtrip([record]) == [{"userAgent": "a\ufffdb", "\ufffd": ["\U0001f600", "\ufffd\ufffd"]}]


def test_an_integer_beyond_64_bits_is_kept_exactly():
    assert roundtrip([{"n": 2**70}]) == [{"n": 2**70}]


def test_empty_slots_and_indexes_past_the_end_read_as_no_record():
    blob = rawcodec.encode_block([b"", rawcodec.dumps({"a": 1}), b"", b""])
    assert [rawcodec.record_at(blob, i) for i in range(5)] == [None, {"a": 1}, None, None, None]
    assert rawcodec.record_at(memoryview(blob), 1) == {"a": 1}  # as PostgreSQL's bytea arrives
    assert rawcodec.decode_block(rawcodec.encode_block([b"", b""])) == []


def test_a_block_of_another_version_is_refused_not_misread():
    blob = bytearray(rawcodec.encode_block([rawcodec.dumps({"a": 1})]))
    blob[0] = 9
    with pytest.raises(ValueError, match="version 9"):
        rawcodec.decode_block(bytes(blob))


def test_a_block_of_typical_records_stores_about_a_tenth_of_their_json_size():
    records = synthetic(1000)
    text_size = sum(len(rawcodec.dumps(r)) for r in records)
    stored = len(rawcodec.encode_block([rawcodec.dumps(r) for r in records]))
    # One record compressed on its own (version 1) stored ~300 B; together they share their text.
    assert stored < text_size / 10
    assert stored / len(records) < 130


@pytest.mark.django_db
def test_ingested_events_point_at_their_own_record_across_several_blocks(settings):
    settings.KMSDASH_INGEST_BATCH_SIZE = 2500
    records = synthetic(2 * rawcodec.BLOCK_RECORDS + 10)
    blocks_before = RawBlock.objects.count()
    ingest_records(records, run=start_run("files"))

    by_id = {r["eventID"]: r for r in records}
    events = list(Event.objects.all())
    used = {e.raw_block_id for e in events}
    assert len(used) == RawBlock.objects.count() - blocks_before >= 3  # none left empty
    if partitions.is_partitioned():  # a block per UTC day and criticality of each batch
        assert all(len({(e.event_time.date(), e.critical) for e in events if e.raw_block_id == b}) == 1 for b in used)
    else:
        assert len(used) == 3
    assert all(e.raw_record() == by_id[e.event_id] for e in events)


@pytest.mark.django_db
def test_a_rerun_of_the_same_records_stores_no_new_raw_block():
    records = synthetic(50)
    ingest_records(records, run=start_run("files"))
    blocks = list(RawBlock.objects.values_list("pk", "data"))
    ingest_records(records + records[:10], run=start_run("files"))
    assert list(RawBlock.objects.values_list("pk", "data")) == blocks


@pytest.mark.django_db
def test_a_batch_of_new_and_duplicate_records_keeps_only_the_new_records():
    records = synthetic(20)
    ingest_records(records[:10], run=start_run("files"))
    first = RawBlock.objects.latest("pk").pk
    ingest_records(records, run=start_run("files"))
    # One block (partitioned events: one per UTC day and criticality of the batch).
    kept = [t for block in RawBlock.objects.filter(pk__gt=first) for t in rawcodec.decode_block(block.data) if t]
    assert sorted(json.loads(t)["eventID"] for t in kept) == sorted(r["eventID"] for r in records[10:])
    assert all(e.raw_record() == r for e, r in ((Event.objects.get(event_id=r["eventID"]), r) for r in records))


@pytest.mark.django_db(transaction=True)
def test_the_migration_to_blocks_keeps_every_version_1_record_and_its_reverse_restores_them():
    executor = MigrationExecutor(connection)
    executor.migrate([("audits", "0005_backfill_key_reach_summaries")])
    old = executor.loader.project_state([("audits", "0005_backfill_key_reach_summaries")]).apps
    OldEvent = old.get_model("audits", "Event")
    common = {"event_time": datetime(2026, 1, 1, tzinfo=UTC), "event_name": "Decrypt", "region": "eu-west-1"}
    OldEvent.objects.create(recipient_account_id="444455556666", event_id="one", raw=V1_BLOB, **common)
    OldEvent.objects.create(recipient_account_id="444455556666", event_id="none", raw=b"", **common)
    try:
        executor = MigrationExecutor(connection)
        executor.migrate([("audits", "0006_raw_blocks")])
        # The models as of 0006: later migrations add event columns that this schema lacks.
        at_blocks = executor.loader.project_state([("audits", "0006_raw_blocks")]).apps

        def raw_record(event_id: str):
            block, index = (
                at_blocks.get_model("audits", "Event")
                .objects.values_list("raw_block_id", "raw_index")
                .get(event_id=event_id)
            )
            if block is None:
                return None
            data = at_blocks.get_model("audits", "RawBlock").objects.values_list("data", flat=True).get(pk=block)
            return rawcodec.record_at(data, index)

        assert raw_record("one") == V1_RECORD
        assert raw_record("none") is None

        executor = MigrationExecutor(connection)
        executor.migrate([("audits", "0005_backfill_key_reach_summaries")])
        old = executor.loader.project_state([("audits", "0005_backfill_key_reach_summaries")]).apps
        assert bytes(old.get_model("audits", "Event").objects.get(event_id="one").raw) == V1_BLOB
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
