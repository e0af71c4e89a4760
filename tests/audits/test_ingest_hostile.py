"""Hostile log files: no value can hide the records after it, and no content costs unbounded memory.

A value one parser cannot read is read by another (Python's json keeps integers of any size), or its
record alone is quarantined with the reason; every other record of the file lands. Items larger than
any record may be are skipped as they are read, by position. See audits/sources/files.py.
"""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
import uuid
import zlib
from datetime import UTC, datetime

import pytest
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audits import rawcodec
from audits.ingest import Unread, ingest_records, start_run
from audits.models import Event, Quarantine
from audits.sources import files
from audits.sources.files import GROUP_BYTES, FileError, import_files, item_limit, iter_file_records
from audits.synthetic import generate_records

T0 = datetime(2026, 3, 2, tzinfo=UTC)
MEMORY_BOUND = 3 * item_limit(512 * 1024) + 32 * GROUP_BYTES


def records(n: int, seed: int = 0) -> list[dict]:
    return list(generate_records(n, seed=seed, start=T0, days=2))


def compact(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def log_file(items: list[bytes], *, indent: bool = False) -> bytes:
    """A {"Records": [...]} document of the given item texts, as they are."""
    separator = b",\n    " if indent else b","
    return b'{"Records":[' + separator.join(items) + b"]}"


def read(data: bytes, **kwargs) -> list:
    return list(iter_file_records(io.BytesIO(data), name="hostile.json", **kwargs))


def peak_of(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def import_one(tmp_path, data: bytes, name: str = "hostile.json.gz"):
    path = tmp_path / name
    path.write_bytes(data)
    return import_files([str(path)])


# -- item 1: one unreadable value hides nothing ----------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "huge",
    # orjson refuses the first and silently reads the others as rounded floats (beyond int64/uint64).
    [int("7" * 4000), -(2**63) - 1, 2**64, 10**19 + 1],
    ids=["4000-digits", "19-digits-below-int64", "20-digits-above-uint64", "20-digits"],
)
def test_a_record_with_a_4000_digit_or_beyond_64_bit_number_lands_with_the_records_around_it(tmp_path, huge):
    # The example: one good record, one with a 4,000-digit number, three good. Python's json
    # reads the number exactly, so the record is an ordinary KMS event, and its raw record keeps every
    # digit; before, the file stopped there (one event, the file quarantined as "integer overflow").
    recs = records(5)
    recs[1]["additionalEventData"] = {"count": huge}
    result = import_one(tmp_path, gzip.compress(log_file([compact(r) for r in recs])))

    assert (result.counts.records_read, result.counts.events_new, result.counts.quarantined) == (5, 5, 0)
    assert set(Event.objects.values_list("event_id", flat=True)) == {r["eventID"] for r in recs}
    event = Event.objects.get(event_id=recs[1]["eventID"])
    stored = rawcodec.record_at(event.raw_block.data, event.raw_index)["additionalEventData"]["count"]
    assert (type(stored), stored) == (int, huge)


@pytest.mark.django_db
def test_a_number_too_long_for_any_parser_quarantines_only_its_record(tmp_path):
    # Python refuses to convert more than 4,300 digits (CVE-2020-10735): that record alone is quarantined.
    recs = records(5)
    items = [compact(r) for r in recs]
    items[1] = items[1][:-1] + b',"n":' + b"9" * 5000 + b"}"
    result = import_one(tmp_path, log_file(items), "long.json")

    assert (result.counts.records_read, result.counts.events_new, result.counts.quarantined) == (5, 4, 1)
    quarantined = Quarantine.objects.get()
    assert "digits" in quarantined.reason and quarantined.raw.startswith('{"eventVersion"')
    assert not Event.objects.filter(event_id=recs[1]["eventID"]).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_in_a_record_quarantines_only_that_record(tmp_path, constant):
    # Not JSON, and PostgreSQL's jsonb refuses them, so the record is quarantined, as LookupEvents
    # records with them always were (audits.cloudtrail.loads_record).
    recs = records(5)
    items = [compact(r) for r in recs]
    items[2] = items[2].replace(b'"readOnly":true', f'"readOnly":true,"ratio":{constant}'.encode())
    assert constant.encode() in items[2]
    result = import_one(tmp_path, gzip.compress(log_file(items)))

    assert (result.counts.records_read, result.counts.events_new, result.counts.quarantined) == (5, 4, 1)
    quarantined = Quarantine.objects.get()
    assert f"{constant.lstrip('-')} is not JSON" in quarantined.reason
    assert constant in quarantined.raw and recs[2]["eventID"] in quarantined.raw
    assert result.run.status == "succeeded"


@pytest.mark.django_db
def test_a_number_beyond_the_range_of_a_float_quarantines_its_record_instead_of_storing_null(tmp_path):
    # Python would read 1e400 as infinity, which the raw record's JSON would then have to hold as null.
    recs = records(3)
    items = [compact(r) for r in recs]
    items[1] = items[1][:-1] + b',"ratio":1e400}'
    result = import_one(tmp_path, log_file(items), "overflow.json")

    assert (result.counts.events_new, result.counts.quarantined) == (2, 1)
    assert "beyond the range of a float" in Quarantine.objects.get().reason


@pytest.mark.django_db
def test_a_lone_surrogate_is_stored_as_u_fffd_in_the_event_and_its_raw_record(tmp_path):
    recs = records(3)
    items = [compact(r) for r in recs]
    items[1] = items[1].replace(b'"userAgent":"', b'"userAgent":"evil\\ud800', 1)
    import_one(tmp_path, log_file(items), "surrogate.json")

    event = Event.objects.get(event_id=recs[1]["eventID"])
    assert event.user_agent.startswith("evil\ufffd")
    raw = rawcodec.record_at(event.raw_block.data, event.raw_index)
    assert raw["userAgent"] == event.user_agent
    assert Event.objects.count() == 3


@pytest.mark.django_db
def test_a_broken_value_inside_a_record_quarantines_that_record_and_the_rest_lands(tmp_path):
    recs = records(4)
    items = [compact(r) for r in recs]
    items[1] = items[1].replace(b'"readOnly":true', b'"readOnly":tru')
    items[2] = items[2].replace(b'"userAgent":"', b'"userAgent":"tab\there ', 1)  # a raw control character
    result = import_one(tmp_path, log_file(items), "broken.json")

    assert (result.counts.records_read, result.counts.events_new, result.counts.quarantined) == (4, 2, 2)
    assert set(Event.objects.values_list("event_id", flat=True)) == {recs[0]["eventID"], recs[3]["eventID"]}
    assert all("invalid JSON" in reason for reason in Quarantine.objects.values_list("reason", flat=True))


# -- item 2: bounded cost ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_record_with_a_huge_string_is_skipped_unread_by_position_and_the_rest_lands(tmp_path):
    recs = records(3)
    items = [compact(r) for r in recs]
    giant = b'{"eventSource":"kms.amazonaws.com","userAgent":"' + b"A" * 30_000_000 + b'"}'
    data = gzip.compress(log_file([items[0], giant, items[1], items[2]]))
    assert len(data) < 100_000

    result = import_one(tmp_path, data)

    assert (result.counts.records_read, result.counts.events_new, result.counts.quarantined) == (4, 3, 1)
    quarantined = Quarantine.objects.get()
    position = len(b'{"Records":[') + len(items[0]) + 1
    assert quarantined.reason == (
        f"record larger than {item_limit(512 * 1024)} bytes ({len(giant)} bytes from byte {position} of the "
        "decompressed file), skipped unread"
    )
    assert quarantined.raw == ""


def test_a_huge_string_costs_a_few_chunks_of_memory_not_its_size():
    giant = b'{"userAgent":"' + b"A" * 60_000_000 + b'"}'
    data = gzip.compress(log_file([b'{"a":1}', giant, b'{"b":2}']))
    got: list = []
    peak = peak_of(lambda: got.extend(read(data)))
    assert got[0] == {"a": 1} and isinstance(got[1], Unread) and got[2] == {"b": 2}
    assert peak < MEMORY_BOUND, peak


def test_a_string_of_escapes_and_backslash_runs_is_stepped_over_exactly():
    # Backslash runs decide whether a quote ends a string; runs cross read chunks here.
    tricky = b'{"s":"' + (b"\\\\" * 200_000 + b'\\"},{') * 3 + b'"}'
    assert json.loads(tricky)["s"].endswith('"},{')
    got = read(log_file([b'{"a":1}', tricky, b'{"b":2}']))
    assert got[0] == {"a": 1} and isinstance(got[1], Unread) and got[2] == {"b": 2}
    got = read(log_file([b'{"a":1}', tricky, b'{"b":2}']), max_record_bytes=4_000_000)
    assert got[1] == json.loads(tricky)


@pytest.mark.django_db
@pytest.mark.parametrize("depth", [100, 2_000, 1_000_000])
def test_deep_nesting_quarantines_its_record_alone(depth):
    recs = records(2)
    deep = b'{"eventSource":"kms.amazonaws.com","x":' + b"[" * depth + b"]" * depth + b"}"
    data = gzip.compress(log_file([compact(recs[0]), deep, compact(recs[1])]))
    assert peak_of(lambda: read(data)) < MEMORY_BOUND

    counts = ingest_records(iter_file_records(io.BytesIO(data), name="deep.json.gz"), run=start_run("files"))

    assert (counts.records_read, counts.events_new, counts.quarantined) == (3, 2, 1)
    reason = Quarantine.objects.get().reason
    if len(deep) > item_limit(512 * 1024):
        assert "larger than" in reason
    else:  # orjson reads 100 levels (the parser refuses more than 64), Python's json no more than ~1,000
        assert ("nested deeper than 64 levels" if depth < 1000 else "nested too deeply") in reason


DEEP = 100_000
TRICKY_STRINGS = b'"\\"", "\\\\", "{[\\"]}", "}],{[", "\\\\\\"]]]", "a\\u005c", "[[[[{{{{"'


@pytest.mark.parametrize(
    "item",
    [
        b"[" * DEEP + TRICKY_STRINGS + b"]" * DEEP,
        b"[" * DEEP + b'"]]]}}},{\\"x\\":1}"' + b"]" * DEEP,
        b'{"x":' * DEEP + b'"\\\\"' + b"}" * DEEP,
        b'{"s":"' + b"[" * DEEP + b'"}',
        b'{"s":"' + b"}" * DEEP + b'"}',
    ],
    ids=["arrays", "brackets-in-a-string", "objects", "opening-in-a-string", "closing-in-a-string"],
)
def test_deep_nesting_and_brackets_in_strings_end_an_item_exactly_where_json_does(item):
    # Neither parser reads 100,000 levels, so the item comes back as its bytes: exactly its text.
    expected = [{"a": 1}, item, {"b": 2}]
    try:
        expected[1] = json.loads(item)
    except RecursionError:
        pass
    assert read(log_file([b'{"a":1}', item, b'{"b":2}']), max_record_bytes=1_000_000) == expected


def test_a_million_open_brackets_that_never_close_end_the_file_after_the_records_before():
    data = gzip.compress(b'{"Records":[{"a":1},' + b"[" * 1_000_000)
    got = []
    with pytest.raises(FileError, match="ends inside a value"):
        got.extend(iter_file_records(io.BytesIO(data), name="deep.json.gz"))
    assert got == [{"a": 1}]


def test_a_gigabyte_of_whitespace_between_records_costs_no_memory(settings):
    settings.KMSDASH_MAX_DECOMPRESSED_BYTES = 2**31
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(b'{"Records":[{"a":1}')]
    block = b" " * 8_000_000
    parts += [compressor.compress(block) for _ in range(128)]
    parts += [compressor.compress(b',{"b":2}]}'), compressor.flush()]
    data = b"".join(parts)
    assert len(data) < 2_000_000
    got: list = []
    peak = peak_of(lambda: got.extend(read(data)))
    assert got == [{"a": 1}, {"b": 2}]
    assert peak < MEMORY_BOUND, peak


def test_a_huge_array_of_tiny_records_is_read_in_bounded_memory():
    data = gzip.compress(b'{"Records":[' + b",".join([b"{}"] * 400_000) + b"]}")
    count = 0

    def consume():
        nonlocal count
        for item in iter_file_records(io.BytesIO(data), name="tiny.json.gz"):
            assert item == {}
            count += 1

    peak = peak_of(consume)
    assert count == 400_000
    assert peak < MEMORY_BOUND, peak


@pytest.mark.django_db
def test_a_flood_of_identical_bad_records_is_one_quarantine_row_counted_as_duplicates_across_batches():
    # Kept once, as the database keeps one row per (location, reason, text), without building a row
    # for each repeat (26 -> 7 us of CPU per record); the ledger counts them as before.
    items = [b"{}"] * 25_000 + [b'{"eventSource":"kms.amazonaws.com"}', b"{}", b"[]"]
    run = start_run("files")
    counts = ingest_records(iter_file_records(io.BytesIO(log_file(items)), name="flood.json"), run=run)

    assert (counts.records_read, counts.quarantined, counts.duplicates) == (25_003, 3, 25_000)
    run.refresh_from_db()
    assert (run.records_read, run.quarantined, run.duplicates) == (25_003, 3, 25_000)
    assert Quarantine.objects.count() == 3


def lying_trailer(data: bytes, *, length: bool) -> bytes:
    cut = bytearray(data)
    cut[-1 if length else -5] ^= 0x01  # the last byte of ISIZE, or of the CRC-32
    return bytes(cut)


@pytest.mark.django_db
@pytest.mark.parametrize("length", [False, True], ids=["crc", "length"])
def test_a_gzip_whose_trailer_lies_keeps_its_records_as_a_truncated_file_does(tmp_path, length):
    recs = records(20)
    data = lying_trailer(gzip.compress(log_file([compact(r) for r in recs])), length=length)
    got = []
    with pytest.raises(FileError, match="corrupt gzip data"):
        got.extend(iter_file_records(io.BytesIO(data), name="liar.json.gz"))
    assert got == recs

    result = import_one(tmp_path, data)
    assert result.counts.events_new == 20
    assert "corrupt gzip data" in Quarantine.objects.get().reason


# -- properties ----------------------------------------------------------------------------------------

# Values of any JSON shape, with the characters the scanner must treat with care.
TRICKY_TEXT = st.text(st.sampled_from('ab"\\{}[],:\n\t\u2028é😀 0'), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TRICKY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TRICKY_TEXT, children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(json_values, max_size=12),
    st.sampled_from([{}, {"separators": (",", ":")}, {"indent": 2}, {"ensure_ascii": False}]),
    st.booleans(),
)
def test_the_scanner_agrees_with_json_on_any_valid_document(items, layout, gzipped):
    document = json.dumps({"Records": items, "NextToken": "x"}, **layout).encode()
    data = gzip.compress(document) if gzipped else document
    expected = [files._record_of(item) for item in json.loads(document)["Records"]]
    assert repr(read(data)) == repr(expected)


GOOD = records(8, seed=7)
# Record texts that no parser reads (or only Python's json does), each balanced in its brackets and
# strings, as any value AWS writes is: what a caller could put into a logged field.
HOSTILE_VALUES = st.one_of(
    st.integers(19, 4300).map(lambda n: "9" * n),
    st.integers(4301, 6000).map(lambda n: "-" + "1" * n),
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "-2.5E+999",
            "tru",
            "01",
            "1.",
            '"\\q"',
            '"a\tb"',
            '"\\ud800"',
            "[1,]",
            '{"a" 1}',
            '"},{\\"eventID\\": 1}"',
            "[" * 80 + "]" * 80,
            "[" * 3000 + "]" * 3000,
        ]
    ),
    st.integers(9_000, 20_000).map(lambda n: '"' + "x" * n + '"'),
)


def hostile_item(base: dict, value: str, how: str) -> bytes:
    record = dict(base, eventID=str(uuid.UUID(int=hash(value) % 2**128)))
    if how == "field":
        return compact(record)[:-1] + b',"requestParameters2":' + value.encode() + b"}"
    if how == "bytes":
        return compact(record).replace(b'"userAgent":"', b'"userAgent":"\xff\xfe', 1)
    return value.encode()  # the value itself as an item of the array


def stored_outcome(data: bytes) -> tuple[set, int, int]:
    """The events (id, name, key, principal) one import of `data` stores, its records read and quarantined;
    rolled back afterwards."""
    with transaction.atomic():
        run = start_run("files")
        try:
            counts = ingest_records(iter_file_records(io.BytesIO(data), name="p.json"), run=run)
        except FileError as exc:
            raise AssertionError(f"the file stopped: {exc}") from exc
        events = set(Event.objects.values_list("event_id", "event_name", "key", "principal"))
        transaction.set_rollback(True)
    return events, counts.records_read, counts.quarantined


@pytest.mark.django_db
@override_settings(KMSDASH_MAX_RECORD_BYTES=8192)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(0, len(GOOD)),
    HOSTILE_VALUES,
    st.sampled_from(["field", "item", "bytes"]),
    st.booleans(),
    st.booleans(),
)
def test_inserting_an_unreadable_record_anywhere_changes_the_stored_events_by_at_most_that_record(
    position, value, how, indent, gzipped
):
    good = [compact(r) for r in GOOD]
    hostile = hostile_item(GOOD[position % len(GOOD)], value, how)
    clean = log_file(good, indent=indent)
    dirty = log_file(good[:position] + [hostile] + good[position:], indent=indent)
    if gzipped:
        clean, dirty = gzip.compress(clean), gzip.compress(dirty)

    clean_events, clean_read, clean_quarantined = stored_outcome(clean)
    dirty_events, dirty_read, dirty_quarantined = stored_outcome(dirty)

    assert len(clean_events) == len(GOOD)
    assert clean_events <= dirty_events and len(dirty_events - clean_events) <= 1
    # The inserted record is counted once: as an event, or as one quarantined record.
    assert dirty_read == clean_read + 1
    assert dirty_quarantined - clean_quarantined == 1 - len(dirty_events - clean_events)


@pytest.mark.parametrize("shift", [0, 1, 9, 18, 19, 24])
def test_a_long_number_across_a_read_chunk_boundary_is_still_read_exactly(shift):
    # 19-digit runs are looked for piece by piece as the bytes are read; a run may straddle two pieces.
    number = int("1" + "0" * 24)
    head = b'{"Records":[{"pad":"'
    pad = files.CHUNK - len(head) - len(b'"},{"n":') - 25 + shift
    data = head + b"p" * pad + b'"},{"n":' + str(number).encode() + b'},{"b":2}]}'
    got = read(data)
    assert got[1] == {"n": number} and type(got[1]["n"]) is int and got[2] == {"b": 2}


@pytest.mark.django_db
def test_a_lookup_events_item_only_python_reads_still_gives_its_record():
    recs = records(3)
    items = [compact({"EventId": r["eventID"], "CloudTrailEvent": json.dumps(r)}) for r in recs]
    items[1] = items[1][:-1] + b',"Size":' + b"5" * 30 + b"}"  # a wrapper field orjson would round
    items[2] = compact({"EventId": "x", "CloudTrailEvent": json.dumps(recs[2])[:-1] + ',"n":NaN}'})
    data = b'{"Events":[' + b",".join(items) + b'],"NextToken":"t"}'

    got = read(data)
    assert [json.loads(text) for text in got[:2]] == recs[:2]
    counts = ingest_records(iter_file_records(io.BytesIO(data), name="lookup.json"), run=start_run("files"))
    assert (counts.records_read, counts.events_new, counts.quarantined) == (3, 2, 1)
    assert "NaN is not JSON" in Quarantine.objects.get().reason


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b'{"Records":[', b"[", b'{"Events":[', b""]), st.booleans())
def test_any_bytes_at_all_give_items_or_a_file_error_and_nothing_else(tail, head, gzipped):
    # Whatever a file holds, reading it ends normally or with FileError: never another exception (an
    # S3 object would be read again every pass) and never a hang.
    data = head + tail
    try:
        for item in read(gzip.compress(data) if gzipped else data, max_record_bytes=64):
            assert isinstance(item, dict | list | str | bytes | int | float | bool | Unread) or item is None
    except FileError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=6), st.data())
def test_a_valid_document_cut_anywhere_gives_a_prefix_of_its_records_then_a_file_error(items, data):
    document = json.dumps({"Records": items}, separators=(",", ":")).encode()
    cut = data.draw(st.integers(0, len(document) - 1))
    got = []
    with pytest.raises(FileError):
        got.extend(read(document[:cut]))
    expected = [files._record_of(item) for item in items]
    assert repr(got) == repr(expected[: len(got)])
