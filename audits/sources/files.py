"""Records out of one CloudTrail file (local or S3), read with bounded memory.

Accepted shapes, gzip-compressed or not (told apart by the gzip magic bytes, not the name):
- the trail log format: {"Records": [<record>, ...]} -> yields each record as a dict;
- LookupEvents output (the API response or `aws cloudtrail lookup-events`):
  {"Events": [{..., "CloudTrailEvent": "<record JSON>"}, ...]} -> yields each CloudTrailEvent string;
- a bare JSON array of either kind of item.

A document that ends within WHOLE_PARSE_LIMIT decompressed bytes (nearly every CloudTrail file) is
parsed in one orjson call, several times cheaper per record than streaming; a larger one is parsed
incrementally (ijson, C backend), so memory stays flat whatever the file size: at most the limit's bytes
and their parsed objects. Whenever orjson could disagree with ijson (invalid JSON, integers beyond 64
bits, lone surrogates, deep nesting, a repeated top-level key, ...) the same bytes are streamed through
ijson instead, so values, errors and partial yields are always exactly those of streaming.
Decompression is counted and stops at a limit (a gzip bomb is a small file). Bytes that are not
UTF-8 are replaced by audits.ingest.INVALID_UTF8_MARK so the one record carrying them can be
quarantined while the rest of the file still lands.
"""

from __future__ import annotations

import codecs
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import ijson
import orjson
from django.conf import settings

from audits.ingest import INVALID_UTF8_MARK, Counts, bulk_gc, ingest_run
from audits.models import IngestRun

CHUNK = 256 * 1024
GZIP_MAGIC = b"\x1f\x8b"
_SNIFF = 64 * 1024
_FIRST_KEY_RE = re.compile(rb'^\s*(?:\xef\xbb\xbf)?\s*(\{\s*"(?P<key>(?:[^"\\]|\\.)*)"|\[)')
# Documents up to this size are parsed in one call. Parsed, a record's objects take ~3x its JSON, so
# a file at the limit peaks at ~45 MB (its bytes, its objects, orjson's working memory); streaming a
# larger one takes ~17 MB, most of it the bytes read ahead to find out that it is larger.
WHOLE_PARSE_LIMIT = 8 * 1024 * 1024
# An integer outside the int64 range has 19 digits or more; ijson rejects it, orjson returns it (an int
# up to 2**64, a float beyond).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGIT_RUN = b"0" * 19
# What surrounds the array of a document with one member, {"Records": [...]} as AWS writes it.
_SOLE_MEMBER_OPEN_RE = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"(?:Records|Events)"[ \t\n\r]*:[ \t\n\r]*(?=\[)')
_SOLE_MEMBER_CLOSE_RE = re.compile(rb"\][ \t\n\r]*\}[ \t\n\r]*\Z")
_CLOSE_WINDOW = 1024  # trailing whitespace beyond this just takes the general path
# A key may spell its letters as escapes ("R\u0065cords"), so counting a key's plain spelling finds
# all its repeats only in a document with no escaped ASCII letter.
_ESCAPED_ASCII_LETTER_RE = re.compile(rb"\\u00[4-7]")


class FileError(Exception):
    """The whole file is unusable: truncated/corrupt gzip, decompression bomb, not JSON, unknown shape."""


def _mark_invalid(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)  # registered for decoding only
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
        self.error: FileError | None = None  # met after bytes that are still to be handed out

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
            if self.error is not None:
                if have:
                    break
                raise self.error
            try:
                piece = self._next_piece()
            except FileError as exc:
                # A truncated or corrupt file: what was inflated before the fault is handed out
                # first, so its whole records still land; the read after that raises.
                self.error = exc
                continue
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
    (LookupEvents format; yields the CloudTrailEvent strings). Memory stays bounded whatever the file
    size (see WHOLE_PARSE_LIMIT); raises FileError (after yielding what was readable) on truncation,
    corruption, or when the decompressed size passes max_decompressed (default
    settings.KMSDASH_MAX_DECOMPRESSED_BYTES)."""
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
    ahead = _ReadAhead(reader)
    items = _whole_document_items(ahead.data, key) if ahead.complete else None
    if items is not None:
        ahead.data = bytearray()  # parsed: its bytes are not needed while the records are handed out
        for item in items:
            yield _record_of(item)
        return
    try:
        for item in ijson.items(ahead, prefix, use_float=True, buf_size=CHUNK):
            yield _record_of(item)
    except ijson.JSONError as exc:
        raise FileError(f"{name}: invalid JSON ({exc})") from exc


class _ReadAhead:
    """The first WHOLE_PARSE_LIMIT (and at most one CHUNK more) bytes of a _Reader, read CHUNK by CHUNK
    as ijson reads; `read(n)` hands them out again, then goes on with the reader.

    An error while reading ahead is raised only when a read reaches it, so streaming still yields the
    records that came before it, as when ijson met it itself.
    """

    def __init__(self, reader: _Reader):
        self.reader = reader
        self.data = bytearray()
        self.offset = 0
        self.complete = False  # the whole document is in `data`
        self.error: Exception | None = None
        try:
            while len(self.data) <= WHOLE_PARSE_LIMIT:
                piece = reader.read(CHUNK)
                if not piece:
                    self.complete = True
                    break
                self.data += piece
        except Exception as exc:  # FileError, or the stream's own (e.g. a dropped connection)
            self.error = exc

    def read(self, size: int) -> bytes:
        if self.offset < len(self.data):
            with memoryview(self.data) as view:
                piece = bytes(view[self.offset : self.offset + size])
            self.offset += len(piece)
            return piece
        self.data = bytearray()  # handed out: free it while the rest streams
        if self.error is not None:
            raise self.error
        return self.reader.read(size)


def _whole_document_items(data: bytearray, key: bytes | None) -> list | None:
    """The items ijson would yield for the document's shape (the `key` array, or the bare array),
    parsed in one call; None when only ijson is sure to give them exactly."""
    if data.translate(_DIGITS_AS_ZERO).find(_LONG_DIGIT_RUN) >= 0:
        return None  # maybe an integer outside the int64 range
    if key is None:
        return _loads_list(data)
    items = _sole_member_items(data)
    return items if items is not None else _member_items(data, key)


def _sole_member_items(data: bytearray) -> list | None:
    """The array of a document that is exactly {"<key>": [...]}: parsing the text between the brackets
    as one array proves there is no other member, so no repeated key either."""
    opening = _SOLE_MEMBER_OPEN_RE.match(data)
    closing = _SOLE_MEMBER_CLOSE_RE.search(data, max(0, len(data) - _CLOSE_WINDOW))
    if not opening or not closing:
        return None
    with memoryview(data)[opening.end() : closing.start() + 1] as array:
        return _loads_list(array)


def _member_items(data: bytearray, key: bytes) -> list | None:
    """The `key` array of a document with other members too (LookupEvents output has a NextToken)."""
    if data.count(b'"' + key + b'"') > 1 or _ESCAPED_ASCII_LETTER_RE.search(data):
        return None  # maybe a repeated top-level key (orjson keeps the last, ijson yields them all)
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    field = key.decode()
    items = document.get(field)
    # ijson's prefix "<key>.item" also matches an object's "item" member and a top-level "<key>.item".
    if not isinstance(items, list) or f"{field}.item" in document:
        return None
    return items


def _loads_list(data: bytearray | memoryview) -> list | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


def _record_of(item: Any) -> dict | str:
    if isinstance(item, dict):
        event = item.get("CloudTrailEvent")
        if isinstance(event, str) and "eventSource" not in item:
            return event
    return item


# --- the local files source ------------------------------------------------------------------------

SUFFIXES = (".json", ".json.gz")


def collect_files(paths: list[str]) -> list[Path]:
    """The files named, and the .json/.json.gz files under the directories named, in a stable order.

    Raises FileNotFoundError for a name that is neither."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"No such file or directory: {name}")
    return found


@dataclass
class FilesResult:
    run: IngestRun
    files: int
    counts: Counts


@bulk_gc()
def import_files(paths: list[str], *, batch_size: int | None = None) -> FilesResult:
    """Import CloudTrail files (and the files under directories) in one run.

    A file that cannot be read whole (truncated, corrupt, too large once decompressed, unreadable) is
    quarantined, its whole records before the fault kept, and the others still land."""
    files = collect_files(paths)
    # A bulk import: let the database write one batch while the next is parsed.
    with ingest_run(IngestRun.Kind.FILES, batch_size=batch_size, background_writes=True) as run:
        for path in files:
            location = str(path)
            try:
                with path.open("rb") as stream:
                    for record in iter_file_records(stream, name=location):
                        run.ingestor.add(record, location=location)
            except (FileError, OSError) as exc:
                run.ingestor.quarantine(location=location, reason=str(exc))
        run.ingestor.flush()
        run.files = len(files)
    return FilesResult(run.row, len(files), run.counts)
