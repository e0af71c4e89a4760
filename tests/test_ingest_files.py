"""Reading CloudTrail files: shapes, gzip, bombs, truncation, bad bytes, bounded memory."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
import zlib
from datetime import UTC, datetime

import pytest

from audits.sources.files import FileError, iter_file_records
from audits.synthetic import generate_records, write_log_files

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def records(n: int, seed: int = 0) -> list[dict]:
    return list(generate_records(n, seed=seed, start=T0, days=2))


def read_all(data: bytes, **kwargs) -> list:
    return list(iter_file_records(io.BytesIO(data), name="test.json", **kwargs))


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
    assert peak < 5_000_000


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


def test_memory_stays_bounded_whatever_the_file_size(tmp_path):
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
    assert peak < 2_500_000, peak


def test_the_synthetic_generator_gives_the_same_records_for_the_same_seed():
    start = datetime(2026, 10, 1, tzinfo=UTC)
    first = list(generate_records(300, seed=5, start=start))
    assert first == list(generate_records(300, seed=5, start=start))
    assert first != list(generate_records(300, seed=6, start=start))
