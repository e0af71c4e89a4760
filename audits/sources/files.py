"""Records out of one CloudTrail file (local or S3), streamed with bounded memory.

Accepted shapes, gzip-compressed or not (told apart by the gzip magic bytes, not the name):
- the trail log format: {"Records": [<record>, ...]} -> yields each record as a dict;
- LookupEvents output (the API response or `aws cloudtrail lookup-events`):
  {"Events": [{..., "CloudTrailEvent": "<record JSON>"}, ...]} -> yields each CloudTrailEvent string;
- a bare JSON array of either kind of item.

The JSON is parsed incrementally (ijson, C backend), so memory stays flat whatever the file size.
Decompression is counted and stops at a limit (a gzip bomb is a small file). Bytes that are not
UTF-8 are replaced by audits.ingest.INVALID_UTF8_MARK so the one record carrying them can be
quarantined while the rest of the file still lands.
"""

from __future__ import annotations

import codecs
import re
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import ijson
from django.conf import settings

from audits.ingest import INVALID_UTF8_MARK

CHUNK = 256 * 1024
GZIP_MAGIC = b"\x1f\x8b"
_SNIFF = 64 * 1024
_FIRST_KEY_RE = re.compile(rb'^\s*(?:\xef\xbb\xbf)?\s*(\{\s*"(?P<key>(?:[^"\\]|\\.)*)"|\[)')


class FileError(Exception):
    """The whole file is unusable: truncated/corrupt gzip, decompression bomb, not JSON, unknown shape."""


def _mark_invalid(error: UnicodeDecodeError) -> tuple[str, int]:
    return INVALID_UTF8_MARK, error.end


codecs.register_error("kmsdash-mark-invalid", _mark_invalid)


class _Reader:
    """File-like `read(n)` over the decompressed, UTF-8-checked bytes of a stream, with a size cap.

    Inflates only as much as each read asks for, so memory stays at a few chunks even for a bomb.
    """

    def __init__(self, stream: BinaryIO, head: bytes, *, gzipped: bool, limit: int, name: str):
        self.stream = stream
        self.pending = head  # input not yet inflated
        self.limit = limit
        self.name = name
        self.total = 0
        self.buffer = b""
        self.done = False
        self.inflater = zlib.decompressobj(wbits=31) if gzipped else None
        self.decoder = codecs.getincrementaldecoder("utf-8")("kmsdash-mark-invalid")

    def _next_piece(self) -> bytes | None:
        """Up to CHUNK more decompressed bytes; None at the end of the file."""
        while True:
            if self.inflater is not None and self.inflater.eof and self.pending.strip(b"\x00"):
                # Concatenated gzip members are one file (RFC 1952).
                self.inflater = zlib.decompressobj(wbits=31)
            if not self.pending or (self.inflater is not None and self.inflater.eof):
                self.pending = self.stream.read(CHUNK)
                if not self.pending:
                    if self.inflater is not None and not self.inflater.eof:
                        raise FileError(f"{self.name}: truncated gzip data")
                    return None
                if self.inflater is not None and self.inflater.eof:
                    continue
            if self.inflater is None:
                piece, self.pending = self.pending, b""
                return piece
            try:
                piece = self.inflater.decompress(self.pending, CHUNK)
            except zlib.error as exc:
                raise FileError(f"{self.name}: corrupt gzip data ({exc})") from exc
            self.pending = self.inflater.unused_data if self.inflater.eof else self.inflater.unconsumed_tail
            if piece:
                return piece

    def read(self, size: int = -1) -> bytes:
        parts = [self.buffer]
        have = len(self.buffer)
        while not self.done and (size < 0 or have < size):
            piece = self._next_piece()
            final = piece is None
            piece = piece or b""
            self.total += len(piece)
            if self.total > self.limit:
                raise FileError(f"{self.name}: decompresses past the {self.limit}-byte limit")
            text = self.decoder.decode(piece, final)
            # ASCII (the usual case) passes through as is; anything else is re-encoded from the
            # decoded text, which holds back a split multi-byte sequence until its end arrives.
            data = piece if len(text) == len(piece) and text.isascii() else text.encode("utf-8")
            parts.append(data)
            have += len(data)
            self.done = final
        data = b"".join(parts)
        if size < 0:
            size = len(data)
        self.buffer = data[size:]
        return data[:size]


def iter_file_records(stream: BinaryIO, *, name: str, max_decompressed: int | None = None) -> Iterator[dict | str]:
    """Records of one CloudTrail file, gzip or plain (detected by magic bytes), either
    {"Records": [...]} (S3 log format; yields dicts) or {"Events": [{..., "CloudTrailEvent": "<json>"}]}
    (LookupEvents format; yields the CloudTrailEvent strings). Streams with bounded memory whatever the
    file size; raises FileError (after yielding what was readable) on truncation, corruption, or when the
    decompressed size passes max_decompressed (default settings.KMSDASH_MAX_DECOMPRESSED_BYTES)."""
    limit = settings.KMSDASH_MAX_DECOMPRESSED_BYTES if max_decompressed is None else max_decompressed
    head = stream.read(2)
    reader = _Reader(stream, head, gzipped=head == GZIP_MAGIC, limit=limit, name=name)
    start = reader.read(_SNIFF)
    match = _FIRST_KEY_RE.match(start)
    if not match:
        raise FileError(f"{name}: not a CloudTrail JSON document")
    key = match.group("key")
    if key == b"Records":
        prefix = "Records.item"
    elif key == b"Events":
        prefix = "Events.item"
    elif key is None:
        prefix = "item"
    else:
        raise FileError(f"{name}: unknown shape (expected a Records or Events array, found {key[:40]!r})")
    if start.startswith(b"\xef\xbb\xbf"):
        start = start[3:]
    reader.buffer = start + reader.buffer
    try:
        for item in ijson.items(reader, prefix, use_float=True, buf_size=CHUNK):
            yield _record_of(item)
    except ijson.JSONError as exc:
        raise FileError(f"{name}: invalid JSON ({exc})") from exc


def _record_of(item: Any) -> dict | str:
    if isinstance(item, dict):
        event = item.get("CloudTrailEvent")
        if isinstance(event, str) and "eventSource" not in item:
            return event
    return item
