"""Reading CloudTrail files: shapes, gzip, bombs, truncation, bad bytes, bounded memory."""

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
from audits.sources.files import CHUNK, WHOLE_PARSE_LIMIT, FileError, iter_file_records
from audits.synthetic import generate_records, write_log_files

T0 = datetime(2026, 3, 2, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures"


def records(n: int, seed: int = 0) -> list[dict]:
    return list(generate_records(n, seed=seed, start=T0, days=2))


def read_all(data: bytes, **kwargs) -> list:
    return list(iter_file_records(io.BytesIO(data), name="test.json", **kwargs))


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


@pytest.fixture
def streamed(monkeypatch) -> list[str]:
    """The prefixes ijson was asked to stream during the test; empty when every file was parsed whole."""
    prefixes = []
    items = files.ijson.items

    def spy(source, prefix, **kwargs):
        prefixes.append(prefix)
        return items(source, prefix, **kwargs)

    monkeypatch.setattr(files.ijson, "items", spy)
    return prefixes


def streaming_outcome(data: bytes, monkeypatch) -> tuple[list[str], str | None]:
    """The outcome when every document streams through ijson, as all did before the whole-document parse."""
    with monkeypatch.context() as patch:
        patch.setattr(files, "WHOLE_PARSE_LIMIT", 0)
        return outcome(data)


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
        {"EventId": r["eventID"], "EventName": r["eventName"], "ReadOnly": "true", "CloudTrailEvent": json.dumps(r),
         "Resources": [], "EventTime": r["eventTime"]}
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
    # What is read ahead to find out whether the document fits the whole-document parse, and no more.
    assert peak < WHOLE_PARSE_LIMIT + 5_000_000


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


def test_a_file_above_the_whole_parse_limit_streams_in_bounded_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "WHOLE_PARSE_LIMIT", 1_000_000)
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
    assert peak < 1_000_000 + 2_500_000, peak


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
def test_a_file_below_the_whole_parse_limit_is_parsed_whole_into_the_records_streaming_gives(
    document, prefix, streamed, monkeypatch
):
    recs = records(50)
    recs[0]["additionalEventData"] = {"ratio": 0.5, "count": 3, "big": 2**53, "tiny": 1e-300, "neg": -0.0}
    data = document(recs)

    whole = outcome(data)
    assert streamed == []
    assert whole == streaming_outcome(data, monkeypatch)
    assert streamed == [prefix]
    assert whole[1] is None
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
def test_the_fixture_files_parsed_whole_have_the_values_and_types_streaming_gives(document, streamed, monkeypatch):
    whole = outcome(document)
    assert streamed == []
    assert whole == streaming_outcome(document, monkeypatch)
    assert whole[0] and whole[1] is None


def test_a_file_just_over_the_whole_parse_limit_streams_the_same_records(streamed, monkeypatch):
    recs = records(200)
    data = gzip.compress(json.dumps({"Records": recs}).encode())
    monkeypatch.setattr(files, "WHOLE_PARSE_LIMIT", len(json.dumps({"Records": recs})) - 1)
    assert read_all(data) == recs
    assert streamed == ["Records.item"]


OPENING = '{"Records": [{"a": 1}, '  # each case below goes on from one good record


@pytest.mark.parametrize(
    ("document", "expected", "error"),
    [
        # ijson refuses integers outside the int64 range; orjson would return an int or a float.
        pytest.param(OPENING + '{"n": 9223372036854775808}, {"b": 2}]}', [{"a": 1}], "invalid JSON", id="2**63"),
        pytest.param(OPENING + '{"n": 18446744073709551616}, {"b": 2}]}', [{"a": 1}], "invalid JSON", id="2**64"),
        pytest.param(OPENING + '{"n": -92233720368547758090}]}', [{"a": 1}], "invalid JSON", id="-10 * 2**63"),
        # orjson refuses these; ijson turns a lone surrogate into "?" and accepts a trailing form feed.
        pytest.param(OPENING + '{"s": "x\\ud800"}]}', [{"a": 1}, {"s": "x?"}], None, id="lone surrogate"),
        pytest.param(OPENING + '{"b": 2}]}\f', [{"a": 1}, {"b": 2}], None, id="trailing form feed"),
        pytest.param(OPENING + '{"n": NaN}]}', [{"a": 1}], "invalid JSON", id="NaN"),
        pytest.param(OPENING + '{"n": Infinity}]}', [{"a": 1}], "invalid JSON", id="Infinity"),
        pytest.param(OPENING + '{"b": 2}]', [{"a": 1}, {"b": 2}], "invalid JSON", id="truncated"),
        pytest.param(OPENING + '{"b": 2}]} {}', [{"a": 1}, {"b": 2}], "invalid JSON", id="trailing garbage"),
        # ijson yields every array of a repeated key, and what else its prefix "Records.item" names.
        pytest.param('{"Records": [{"a": 1}], "Records": [{"b": 2}]}', [{"a": 1}, {"b": 2}], None, id="repeated key"),
        pytest.param(
            '{"Records": [{"a": 1}], "R\\u0065cords": [{"b": 2}]}', [{"a": 1}, {"b": 2}], None, id="escaped repeat"
        ),
        pytest.param('{"Records": [{"a": 1}], "Records.item": {"b": 2}}', [{"a": 1}, {"b": 2}], None, id="dotted key"),
        pytest.param('{"Records": {"item": {"a": 1}, "other": {"b": 2}}}', [{"a": 1}], None, id="object of items"),
    ],
)
def test_a_document_orjson_would_read_differently_streams_as_before(document, expected, error, streamed, monkeypatch):
    data = document.encode()
    got = outcome(data)
    assert streamed == ["Records.item"]
    assert got == streaming_outcome(data, monkeypatch)
    assert got[0] == [repr(record) for record in expected]
    assert (got[1] is None) if error is None else (error in got[1])


def test_nesting_deeper_than_orjson_allows_streams_as_before(streamed):
    data = ('{"Records": [{"a": 1}, ' + '{"x": ' * 2_000 + "1" + "}" * 2_000 + "]}").encode()
    got = read_all(data)
    assert streamed == ["Records.item"]
    assert got[0] == {"a": 1}
    depth, value = 0, got[1]
    while isinstance(value, dict):
        depth, value = depth + 1, value["x"]
    assert (depth, value) == (2_000, 1)


def test_a_truncated_gzip_below_the_whole_parse_limit_yields_what_streaming_yields(streamed, monkeypatch):
    data = gzip.compress(json.dumps({"Records": records(2000)}).encode())
    cut = data[: len(data) // 2]
    got = outcome(cut)
    assert streamed == ["Records.item"]
    assert got == streaming_outcome(cut, monkeypatch)
    assert got[0] and "truncated" in got[1]


@pytest.mark.django_db
def test_a_record_with_bytes_that_are_not_utf8_is_quarantined_when_parsed_whole(streamed):
    recs = records(3)
    recs[1]["userAgent"] = "agent-\u00e9"
    text = json.dumps({"Records": recs}, ensure_ascii=False).encode().replace("\u00e9".encode(), b"\xe9")
    run = ingest.start_run("files")
    counts = ingest.ingest_records(iter_file_records(io.BytesIO(gzip.compress(text)), name="bad.json.gz"), run=run)
    assert streamed == []
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


def test_a_file_far_above_the_whole_parse_limit_is_read_lazily_in_bounded_memory(streamed):
    # Few objects per byte, so that tracing allocations stays quick.
    record = records(1)[0] | {"responseElements": {"ciphertextBlob": "AQIDAHh" * 1_200}}
    stream = LazyLogFile(record, 22_000)
    assert stream.size > 200_000_000
    reading = iter_file_records(stream, name="big.json", max_decompressed=stream.size)
    tracemalloc.start()
    try:
        assert next(reading) == record
        # Only what was read ahead to learn that the document is too big to parse whole.
        assert stream.consumed <= WHOLE_PARSE_LIMIT + 2 * CHUNK
        assert stream.consumed < stream.size / 20
        while stream.consumed < 2 * WHOLE_PARSE_LIMIT:
            assert next(reading) == record
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        reading.close()
    assert streamed == ["Records.item"]
    assert peak < WHOLE_PARSE_LIMIT + 5_000_000, peak


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
