"""Compact storage of raw CloudTrail records: many records compressed together in one block.

A KMS record is 1-2 KB of JSON, and the records of one batch repeat each other's field names,
account ids, ARNs, agents and addresses. zstd over a block of them keeps far less than each
record compressed on its own (zlib with a preset dictionary, the previous format) did (the
README's benchmarks give the figures).
An event row names its block and its index in it (Event.raw_block, Event.raw_index).

Block format: one version byte, then zstd of the records' compact JSON texts joined by newlines
(compact JSON never holds a raw newline: strings escape it). An empty slot is an event that was
not inserted (a duplicate), so it costs nothing. Never change a version in place: add one, and
keep decoding the old.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

import orjson
import zstandard

VERSION = 2  # 1 was one record per blob (zlib + dictionary), rewritten into blocks by migration 0006
# Records per block: one drawer click decompresses one block, which at this size stays quick, and
# the ratio is the same from 500 records on.
BLOCK_RECORDS = 1000
# Level 6 stores less than level 3 for more CPU. It runs in the writer thread (zstd releases the
# GIL), beside the parser, so the smaller level pays.
LEVEL = 6

# One encoder for the records that orjson refuses (lone surrogates, integers beyond 64 bits).
_dumps_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _replacement_character(error: UnicodeError) -> tuple[bytes, int]:
    assert isinstance(error, UnicodeEncodeError)  # registered for encoding only
    # As bytes: CPython's UTF-8 encoder takes only ASCII text from an error handler.
    return "\ufffd".encode() * (error.end - error.start), error.end


# UTF-8 cannot encode a lone surrogate; it is stored as U+FFFD, as audits.cloudtrail cleans the
# event's columns ("replace" would write '?', which looks like text the record really held).
codecs.register_error("kmsdash-replacement-character", _replacement_character)


def dumps(record: dict[str, Any]) -> bytes:
    """The compact UTF-8 JSON text stored for a record (a lone surrogate becomes U+FFFD)."""
    try:
        # orjson's bytes keep their 8 KiB working buffer; a batch holds tens of thousands of texts,
        # so keep an exact copy instead, a fraction of the memory.
        return memoryview(orjson.dumps(record)).tobytes()
    except (TypeError, orjson.JSONEncodeError):
        return _dumps_json(record).encode("utf-8", "kmsdash-replacement-character")


def encode_block(texts: list[bytes]) -> bytes:
    """One block of record texts (b"" for an empty slot), as stored."""
    while texts and not texts[-1]:
        texts = texts[:-1]
    return bytes([VERSION]) + zstandard.ZstdCompressor(level=LEVEL).compress(b"\n".join(texts))


def decode_block(blob: bytes | memoryview) -> list[bytes]:
    """The record texts of a block, by index (b"" for an empty slot)."""
    blob = bytes(blob)
    if not blob:
        return []
    if blob[0] != VERSION:
        raise ValueError(f"unknown raw block version {blob[0]}")
    text = zstandard.ZstdDecompressor().decompress(blob[1:])
    return text.split(b"\n") if text else []


def record_at(blob: bytes | memoryview, index: int) -> dict[str, Any] | None:
    """The record stored at `index` of a block; None for an empty or missing slot."""
    texts = decode_block(blob)
    if not 0 <= index < len(texts) or not texts[index]:
        return None
    return json.loads(texts[index])
