"""Reading CloudTrail files: shapes, gzip, bombs, truncation, bad bytes, bounded memory.

Hostile content (values no parser reads, records over the limit, lying trailers) is in
tests/audits/test_ingest_hostile.py."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import tracemalloc
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audits import ingest
from audits.sources import files
from audits.sources.files import CHUNK, GROUP_BYTES, FileError, item_limit, iter_file_records
from audits.synthetic import generate_records, write_log_files

T0 = datetime(2026, 3, 2, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures"


def records(n: int, seed: int = 0) -> list[dict]:
    return list(generate_records(n, seed=seed, start=T0, days=2))


def read_all(data: bytes, **kwargs) -> list:
    return list(iter_file_records(io.BytesIO(data), name="test.json", **kwargs))


# What one file may hold in memory at once: the item being read or a group of items with its parsed
# objects, and the bytes read ahead (see audits/sources/files.py).
MEMORY_BOUND = 3 * item_limit(512 * 1024) + 8 * GROUP_BYTES


def outcome(data: bytes) -> tuple[list[str], str | None]:
    """Everything a reader sees: the records yielded (as repr, so 1 and 1.0 differ, as do key orders)
    and the error that ended the file, if any."""
    got = []
    try:
        for record in iter_file_records(io.BytesIO(data), name="test.json"):
            got.append(repr(record))
    except FileError as exc:
        return got, str(exc)
    return got, None


def json_outcome(data: bytes, key: str | None = "Records") -> tuple[list[str], None]:
    """The outcome Python's json module gives for a whole, valid document."""
    document = json.loads(data)
    items = document if key is None else document[key]
    return [repr(files._record_of(item)) for item in items], None


def test_a_gzipped_trail_log_file_yields_its_records_as_dicts():
    recs = records(5)
    assert read_all(gzip.compress(json.dumps({"Records": recs}).encode())) == recs


def test_a_plain_json_trail_log_file_with_whitespace_and_a_bom_is_read_the_same():
    recs = records(3)
    assert read_all(b"\xef\xbb\xbf" + json.dumps({"Records": recs}, indent=2).encode()) == recs


def test_lookup_events_output_yields_the_cloudtrail_event_strings():
    recs = records(4)
    # The API/CLI shape: event summary fields, the record as a JSON string, then the page token.
    events = [
        {
            "EventId": r["eventID"],
            "EventName": r["eventName"],
            "ReadOnly": "true",
            "CloudTrailEvent": json.dumps(r),
            "Resources": [],
            "EventTime": r["eventTime"],
        }
        for r in recs
    ]
    out = read_all(json.dumps({"Events": events, "NextToken": "abc"}).encode())
    assert [json.loads(text) for text in out] == recs


def test_a_bare_array_of_records_is_accepted():
    recs = records(2)
    assert read_all(json.dumps(recs).encode()) == recs


def test_concatenated_gzip_members_are_one_file():
    recs = records(6)
    data = gzip.compress(json.dumps({"Records": recs}).encode())
    half = len(data)  # split the plain text across two members
    text = json.dumps({"Records": recs}).encode()
    data = gzip.compress(text[: len(text) // 2]) + gzip.compress(text[len(text) // 2 :])
    assert half and read_all(data) == recs


@pytest.mark.parametrize("document", [b'{"NextToken": "x", "Events": []}', b'{"Foo": [1]}', b"42", b"", b"not json"])
def test_an_unknown_shape_is_a_file_error(document):
    with pytest.raises(FileError):
        read_all(document)


def test_a_truncated_gzip_raises_after_yielding_what_was_readable():
    recs = records(2000)
    data = gzip.compress(json.dumps({"Records": recs}).encode())
    got = []
    with pytest.raises(FileError, match="truncated"):
        for record in iter_file_records(io.BytesIO(data[: len(data) * 2 // 3]), name="cut.json.gz"):
            got.append(record)
    assert 0 < len(got) < len(recs)
    assert got == recs[: len(got)]


def test_corrupt_gzip_data_is_a_file_error():
    data = bytearray(gzip.compress(json.dumps({"Records": records(50)}).encode()))
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    with pytest.raises(FileError):
        read_all(bytes(data))


def test_a_gzip_bomb_stops_at_the_decompressed_size_limit(settings):
    settings.KMSDASH_MAX_DECOMPRESSED_BYTES = 40_000_000
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = compressor.compress(b'{"Records": [' + b" " * 100_000_000) + compressor.flush()
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(FileError, match="limit"):
            read_all(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A few chunks of whitespace at a time, never the whole of it.
    assert peak < MEMORY_BOUND, peak


def test_the_limit_can_be_passed_explicitly():
    data = json.dumps({"Records": records(20)}).encode()
    with pytest.raises(FileError, match="limit"):
        read_all(data, max_decompressed=1000)
    assert len(read_all(data, max_decompressed=len(data))) == 20


def test_a_truncated_plain_json_file_raises_after_its_complete_records():
    recs = records(3)
    text = json.dumps({"Records": recs}).encode()
    got = []
    with pytest.raises(FileError, match="invalid JSON"):
        for record in iter_file_records(io.BytesIO(text[:-40]), name="cut.json"):
            got.append(record)
    assert got == recs[:2]


def test_bytes_that_are_not_utf8_mark_only_the_record_carrying_them():
    recs = records(3)
    recs[1]["userAgent"] = "agent-\u00e9"
    text = json.dumps({"Records": recs}, ensure_ascii=False).encode().replace("\u00e9".encode(), b"\xe9")
    got = read_all(gzip.compress(text))
    assert got[0] == recs[0] and got[2] == recs[2]
    assert got[1]["userAgent"] == "agent-\ufdd0"


def test_multibyte_characters_split_across_read_chunks_survive():
    recs = records(400)
    for record in recs:
        record["userAgent"] = "ü€😀" * 50
    data = gzip.compress(json.dumps({"Records": recs}, ensure_ascii=False).encode())
    assert read_all(data) == recs


def test_a_large_file_is_read_in_bounded_memory(tmp_path):
    path = write_log_files(generate_records(4_000, start=T0), tmp_path, per_file=4_000)[0]
    with path.open("rb") as stream:
        size = len(gzip.decompress(stream.read()))
    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            count = sum(1 for _ in iter_file_records(stream, name=str(path)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 4_000
    assert size > 5_000_000
    assert peak < min(MEMORY_BOUND, size / 2), peak


def lookup_events_document(recs: list[dict]) -> bytes:
    events = [{"EventId": r["eventID"], "CloudTrailEvent": json.dumps(r)} for r in recs]
    return json.dumps({"Events": events, "NextToken": "abc"}).encode()


@pytest.mark.parametrize(
    ("document", "prefix"),
    [
        pytest.param(lambda recs: gzip.compress(json.dumps({"Records": recs}).encode()), "Records.item", id="gzip"),
        pytest.param(lambda recs: json.dumps({"Records": recs}, indent=2).encode(), "Records.item", id="indented"),
        pytest.param(lambda recs: json.dumps({"Records": recs, "x": [1]}).encode(), "Records.item", id="more members"),
        pytest.param(lookup_events_document, "Events.item", id="lookup events"),
        pytest.param(lambda recs: json.dumps(recs).encode(), "item", id="bare array"),
    ],
)
def test_every_shape_gives_the_records_with_the_values_and_types_json_gives(document, prefix):
    recs = records(50)
    recs[0]["additionalEventData"] = {"ratio": 0.5, "count": 3, "big": 2**53, "tiny": 1e-300, "neg": -0.0}
    data = document(recs)

    got = outcome(data)
    key = None if prefix == "item" else prefix.split(".")[0]
    assert got == json_outcome(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data, key)
    assert [json.loads(text) if isinstance(text, str) else text for text in read_all(data)] == recs


@pytest.mark.parametrize(
    "document",
    [
        (FIXTURES / "kms_cloudtrail_examples.json").read_bytes(),
        b'{"Records": [' + (FIXTURES / "kms_cloudtrail_examples.json").read_bytes() + b"]}",
        b'{"Records": [' + (FIXTURES / "ce_example.json").read_bytes() + b"]}",
    ],
    ids=["aws examples as a bare array", "aws examples as records", "cost explorer example as a record"],
)
def test_the_fixture_files_have_the_values_and_types_json_gives(document):
    got = outcome(document)
    assert got == json_outcome(document, None if document.startswith(b"[") else "Records")
    assert got[0] and got[1] is None


def test_a_file_of_many_groups_gives_every_record_in_order():
    recs = records(2_000)
    data = gzip.compress(json.dumps({"Records": recs}).encode())
    assert len(gzip.decompress(data)) > 4 * GROUP_BYTES
    assert read_all(data) == recs


OPENING = '{"Records": [{"a": 1}, '  # each case below goes on from one good record


@pytest.mark.parametrize(
    ("document", "expected", "error"),
    [
        # Integers outside the int64 range, which orjson would round (or refuse), come back exact.
        pytest.param(
            OPENING + '{"n": 9223372036854775808}, {"b": 2}]}', [{"a": 1}, {"n": 2**63}, {"b": 2}], None, id="2**63"
        ),
        pytest.param(
            OPENING + '{"n": 18446744073709551616}, {"b": 2}]}', [{"a": 1}, {"n": 2**64}, {"b": 2}], None, id="2**64"
        ),
        pytest.param(
            OPENING + '{"n": -92233720368547758090}]}', [{"a": 1}, {"n": -92233720368547758090}], None, id="-10 * 2**63"
        ),
        # A lone surrogate is read as one (it becomes U+FFFD when stored, see test_ingest_hostile.py).
        pytest.param(OPENING + '{"s": "x\\ud800"}]}', [{"a": 1}, {"s": "x\ud800"}], None, id="lone surrogate"),
        # No JSON reader takes NaN: the record's bytes go on to the Ingestor, which quarantines them.
        pytest.param(OPENING + '{"n": NaN}]}', [{"a": 1}, b'{"n": NaN}'], None, id="NaN"),
        pytest.param(
            OPENING + '{"n": Infinity}, {"b": 2}]}', [{"a": 1}, b'{"n": Infinity}', {"b": 2}], None, id="Infinity"
        ),
        pytest.param(OPENING + '{"b": 2}]}\f', [{"a": 1}, {"b": 2}], "after the document", id="trailing form feed"),
        pytest.param(OPENING + '{"b": 2}]', [{"a": 1}, {"b": 2}], "invalid JSON", id="truncated"),
        pytest.param(OPENING + '{"b": 2}]} {}', [{"a": 1}, {"b": 2}], "invalid JSON", id="trailing garbage"),
        # Every array of a repeated key is read, so that a second one cannot hide records.
        pytest.param('{"Records": [{"a": 1}], "Records": [{"b": 2}]}', [{"a": 1}, {"b": 2}], None, id="repeated key"),
        pytest.param(
            '{"Records": [{"a": 1}], "R\\u0065cords": [{"b": 2}]}', [{"a": 1}, {"b": 2}], None, id="escaped repeat"
        ),
        pytest.param('{"Records": [{"a": 1}], "Records.item": {"b": 2}}', [{"a": 1}], None, id="dotted key"),
        pytest.param('{"Records": {"item": {"a": 1}, "other": {"b": 2}}}', [], "unknown shape", id="object of items"),
    ],
)
def test_a_value_one_parser_reads_differently_stays_in_its_own_record(document, expected, error):
    got = outcome(document.encode())
    assert got[0] == [repr(record) for record in expected]
    assert (got[1] is None) if error is None else (error in got[1])


def test_a_truncated_gzip_yields_its_whole_records_then_raises():
    recs = records(2000)
    data = gzip.compress(json.dumps({"Records": recs}).encode())
    got = outcome(data[: len(data) // 2])
    assert got[0] and got[0] == [repr(record) for record in recs[: len(got[0])]]
    assert "truncated" in got[1]


@pytest.mark.django_db
def test_a_record_with_bytes_that_are_not_utf8_is_quarantined_alone():
    recs = records(3)
    recs[1]["userAgent"] = "agent-\u00e9"
    text = json.dumps({"Records": recs}, ensure_ascii=False).encode().replace("\u00e9".encode(), b"\xe9")
    run = ingest.start_run("files")
    counts = ingest.ingest_records(iter_file_records(io.BytesIO(gzip.compress(text)), name="bad.json.gz"), run=run)
    assert (counts.records_read, counts.events_new, counts.quarantined) == (3, 2, 1)
    assert "invalid UTF-8" in run.quarantine.get().reason


class LazyLogFile:
    """A plain {"Records": [...]} file of `count` copies of one record, produced only as far as it is read."""

    def __init__(self, record: dict, count: int):
        item = json.dumps(record).encode()
        self.size = len(b'{"Records": []}') + len(item) * count + count - 1
        self.parts = itertools.chain([b'{"Records": [', item], itertools.repeat(b", " + item, count - 1), [b"]}"])
        self.pending = b""
        self.consumed = 0

    def read(self, size: int) -> bytes:
        parts, have = [self.pending], len(self.pending)
        while have < size and (part := next(self.parts, None)) is not None:
            parts.append(part)
            have += len(part)
        data = b"".join(parts)
        self.pending = data[size:]
        self.consumed += min(size, len(data))
        return data[:size]


def test_a_file_of_hundreds_of_megabytes_is_read_lazily_in_bounded_memory():
    # Few objects per byte, so that tracing allocations stays quick.
    record = records(1)[0] | {"responseElements": {"ciphertextBlob": "AQIDAHh" * 1_200}}
    stream = LazyLogFile(record, 22_000)
    assert stream.size > 200_000_000
    reading = iter_file_records(stream, name="big.json", max_decompressed=stream.size)
    tracemalloc.start()
    try:
        assert next(reading) == record
        # Only what one group of records needs.
        assert stream.consumed <= GROUP_BYTES + 2 * CHUNK
        while stream.consumed < 20_000_000:
            assert next(reading) == record
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        reading.close()
    assert peak < MEMORY_BOUND, peak


def test_the_synthetic_generator_gives_the_same_records_for_the_same_seed():
    start = datetime(2026, 10, 1, tzinfo=UTC)
    first = list(generate_records(300, seed=5, start=start))
    assert first == list(generate_records(300, seed=5, start=start))
    assert first != list(generate_records(300, seed=6, start=start))


def test_time_ordered_synthetic_records_are_the_random_time_ones_in_increasing_time():
    start = datetime(2026, 10, 1, tzinfo=UTC)
    shuffled = list(generate_records(300, seed=5, start=start, days=2))
    ordered = list(generate_records(300, seed=5, start=start, days=2, time_ordered=True))

    times = [record.pop("eventTime") for record in ordered]
    assert times == sorted(times) and times[0] == "2026-10-01T00:00:00Z" and times[-1] < "2026-10-03"
    assert [record.pop("eventTime") for record in shuffled] != times
    assert ordered == shuffled
