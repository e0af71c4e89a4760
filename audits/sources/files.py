"""Records out of one CloudTrail file (local or S3), read record by record in bounded memory.

Accepted shapes, gzip-compressed or not (told apart by the gzip magic bytes, not the name):
- the trail log format: {"Records": [<record>, ...]} -> yields each record as a dict;
- LookupEvents output (the API response or `aws cloudtrail lookup-events`):
  {"Events": [{..., "CloudTrailEvent": "<record JSON>"}, ...]} -> yields each CloudTrailEvent string;
- a bare JSON array of either kind of item.

No value can hide the records after it. A scanner walks the decompressed bytes, finds the array of
the document's first member (and of any later member of the same name) and splits it into items by
position, tracking only strings, escapes and bracket depth. Items are parsed by orjson in groups of
up to GROUP_BYTES (one call per group: nearly as cheap as parsing the whole file at once); a group
orjson refuses is halved until the item it refuses is alone, and that item is re-read by Python's
json (integers of any size, lone surrogates) through audits.cloudtrail.loads_json, as LookupEvents
records are. An item neither reads (NaN, Infinity, 1e400, broken JSON within its brackets) is
yielded as its bytes, for the Ingestor to quarantine alone with json's reason; an item larger than
item_limit() is skipped as it is read, never held whole, and yielded as audits.ingest.Unread
naming its position. So memory stays within a few times the record limit whatever the content,
and every other item of the file lands.

What the scanner cannot step over ends the file with FileError, after every item before it: a
truncated or corrupt gzip (a member whose CRC or length trailer lies included: its data is handed
out first), bytes that are not JSON between items, a document that ends inside an item, an unknown
shape. Decompression is counted and stops at a limit (a gzip bomb is a small file). Bytes that are
not UTF-8 are replaced by audits.ingest.INVALID_UTF8_MARK so the one record carrying them can be
quarantined while the rest of the file still lands.
"""

from __future__ import annotations

import codecs
import gzip
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from django.conf import settings

from audits.cloudtrail import loads_json
from audits.ingest import INVALID_UTF8_MARK, Counts, Unread, bulk_gc, ingest_run
from audits.models import IngestRun

CHUNK = 256 * 1024
GZIP_MAGIC = b"\x1f\x8b"
# Items parsed per orjson call at most, in bytes. Parsed, records take several times their JSON, the
# densest hostile content (`{},{},...`) the most, so a group costs at most a few MB whatever it holds.
GROUP_BYTES = 64 * 1024
_MIN_GROUP = 4 * 1024  # below this a group that orjson refuses is read item by item
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = re.compile(rb"[ \t\n\r]*")
_STRUCTURAL = re.compile(rb'["\[\]{}]')
# A run of opening brackets (and the whitespace between them) is one step of the scanner, so deep
# nesting costs C speed; closing ones are taken one run at a time for the same reason.
_OPENING_RUN = re.compile(rb"[\[{][\[{ \t\n\r]*")
_CLOSING_RUN = re.compile(rb"[\]}]+")
_SCALAR_END = re.compile(rb'[,\]}\[{" \t\n\r]')
_NEXT_IS_OPEN_BRACE = re.compile(rb"[ \t\n\r]*\{")
# orjson reads an integer outside the int64/uint64 range as a float, silently rounded; such an item
# (or one with any 19-digit run, even in a string) is read by Python's json, which keeps every digit.
# Found as the bytes are read, one translate() per piece (a regex search costs ten times more).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGIT_RUN = b"0" * 19
_KEY_LIMIT = 1024  # a member name longer than this is no name kmsdash looks for


class FileError(Exception):
    """The whole file is unusable: truncated/corrupt gzip, decompression bomb, not JSON, unknown shape."""


def _mark_invalid(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)  # registered for decoding only
    return INVALID_UTF8_MARK, error.end


codecs.register_error("kmsdash-mark-invalid", _mark_invalid)


def item_limit(max_record_bytes: int) -> int:
    """The largest item a file may hold for a record within `max_record_bytes`: a pretty-printed
    record, or a LookupEvents item carrying the record as an escaped string, takes up to about twice
    the record's compact text (which the Ingestor measures exactly)."""
    return 2 * max_record_bytes


class _Prepended:
    """A stream with the bytes already read from it put back in front."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self.head = head
        self.stream = stream

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data, self.head = (self.head, b"") if size < 0 else (self.head[:size], self.head[size:])
            return data
        return self.stream.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        # gzip.GzipFile's fileobj type asks for it, but it seeks only when rewound, which _Reader never is.
        raise io.UnsupportedOperation("seek")


class _Reader:
    """The decompressed, UTF-8-checked bytes of a stream, a piece at a time, with a size cap.

    gzip.GzipFile inflates only as much as each read asks for (memory stays at a few chunks even for
    a bomb), reads concatenated members and NUL padding as one file (RFC 1952), and checks a member's
    CRC and length only on the read after its data, so a lying trailer loses no record.
    """

    def __init__(self, stream: BinaryIO, head: bytes, *, gzipped: bool, limit: int, name: str):
        source = _Prepended(head, stream)
        self.source: Any = gzip.GzipFile(fileobj=source, mode="rb") if gzipped else source
        self.gzipped = gzipped
        self.limit = limit
        self.name = name
        self.total = 0
        self.done = False
        self.decoder = codecs.getincrementaldecoder("utf-8")("kmsdash-mark-invalid")

    def read(self) -> bytes | None:
        """Up to about CHUNK more bytes; None at the end. Raises FileError, or the stream's own error."""
        if self.done:
            return None
        try:
            piece = self.source.read1(CHUNK) if self.gzipped else self.source.read(CHUNK)
        except EOFError as exc:
            raise FileError(f"{self.name}: truncated gzip data") from exc
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise FileError(f"{self.name}: corrupt gzip data ({exc})") from exc
        self.total += len(piece)
        if self.total > self.limit:
            raise FileError(f"{self.name}: decompresses past the {self.limit}-byte limit")
        final = not piece
        text = self.decoder.decode(piece, final)
        if final:
            self.done = True
            return text.encode("utf-8") if text else None
        # ASCII (the usual case) passes through as is; anything else is re-encoded from the decoded
        # text, which holds back a split multi-byte sequence until its end arrives.
        return piece if len(text) == len(piece) and text.isascii() else text.encode("utf-8")


class _Scanner:
    """Items out of the decompressed bytes, held in `buf` from file position `offset` on; `pos` is
    the next byte to look at. Only what the current item or group needs stays in `buf`."""

    def __init__(self, reader: _Reader, *, name: str, item_limit: int):
        self.reader = reader
        self.name = name
        self.item_limit = item_limit
        self.buf = bytearray()
        self.pos = 0
        self.offset = 0
        self.item_start: int | None = None  # in buf: the item being kept; None while one is skipped
        self.pending: BaseException | None = None  # met while reading ahead; raised when data is needed
        self.ended = False
        # File positions [first, last) between which each piece read holds 19-digit runs, if any.
        self.digit_runs: list[tuple[int, int]] = []
        self._tail = b""  # the last bytes read, in which a run may have begun

    # -- bytes ---------------------------------------------------------------------------------

    def _drop_before(self, keep: int) -> int:
        """Forget the bytes before buf[keep - 1] (one is kept: see _group); returns how many."""
        drop = keep - 1
        if drop < CHUNK or drop < len(self.buf) // 2:
            return 0
        del self.buf[:drop]
        self.offset += drop
        self.pos -= drop
        if self.item_start is not None:
            self.item_start -= drop
        return drop

    def _read(self) -> bool:
        """Append the next piece; False at the end of the file (or after an error met before)."""
        if self.ended:
            return False
        try:
            piece = self.reader.read()
        except Exception as exc:  # FileError, or the stream's own (e.g. a dropped connection)
            self.pending, self.ended = exc, True
            return False
        if piece is None:
            self.ended = True
            return False
        at = self.offset + len(self.buf) - len(self._tail)
        probe = (self._tail + piece).translate(_DIGITS_AS_ZERO)
        first = probe.find(_LONG_DIGIT_RUN)
        if first >= 0:
            self.digit_runs = [run for run in self.digit_runs if run[1] > self.offset]
            self.digit_runs.append((at + first, at + probe.rfind(_LONG_DIGIT_RUN) + len(_LONG_DIGIT_RUN)))
        self._tail = (self._tail + piece)[-len(_LONG_DIGIT_RUN) + 1 :]
        self.buf += piece
        return True

    def _long_digits(self, start: int, end: int) -> bool:
        """Whether buf[start:end] may hold a 19-digit run."""
        start += self.offset
        end += self.offset
        return any(first < end and last > start for first, last in self.digit_runs)

    def _more(self, resume: int) -> int:
        """More bytes for a scan that stopped at buf[resume]; returns how far buf shifted (subtract it
        from indices into buf). Raises the read's error, or FileError at the end of the file."""
        start = self.item_start
        if start is not None and len(self.buf) - start > self.item_limit:
            self.item_start = start = None  # too large: skipped from here on, its bytes dropped as read
        shift = self._drop_before(resume if start is None else start)
        if not self._read():
            self.fail("the document ends inside a value")
        return shift

    def fail(self, what: str) -> None:
        if self.pending is not None:
            raise self.pending
        raise FileError(f"{self.name}: invalid JSON: {what} at byte {self.offset + self.pos}")

    def fill(self, size: int) -> None:
        """Read ahead until `size` bytes from pos are held (or the file ends); errors wait until needed."""
        self._drop_before(self.pos)
        while len(self.buf) - self.pos < size and self._read():
            pass

    def skip_whitespace(self) -> None:
        while True:
            match = _WHITESPACE.match(self.buf, self.pos)
            assert match is not None  # it matches the empty string
            self.pos = match.end()
            if self.pos < len(self.buf):
                return
            self._more(self.pos)

    def peek(self) -> int:
        """The next byte that is not whitespace (pos left on it)."""
        self.skip_whitespace()
        return self.buf[self.pos]

    def at_end(self) -> bool:
        """Whitespace only up to the end of the file (raises a read error met on the way)."""
        while True:
            match = _WHITESPACE.match(self.buf, self.pos)
            assert match is not None  # it matches the empty string
            self.pos = match.end()
            if self.pos < len(self.buf):
                return False
            self._drop_before(self.pos)
            if not self._read():
                if self.pending is not None:
                    raise self.pending
                return True

    # -- one value by position -----------------------------------------------------------------

    def _string_end(self, i: int) -> int:
        """The index after the closing quote of the string whose content starts at buf[i]."""
        while True:
            j = self.buf.find(b'"', i)
            if j < 0:
                # A run of backslashes at the end may escape a quote still to come: resume at its start.
                tail = self.buf[i:]
                i = len(self.buf) - (len(tail) - len(tail.rstrip(b"\\")))
                i -= self._more(i)
                continue
            segment = self.buf[i:j]
            if (len(segment) - len(segment.rstrip(b"\\"))) % 2 == 0:
                return j + 1
            i = j + 1

    def scan_value(self, *, keep: bool = True) -> tuple[memoryview | None, int]:
        """Step over the value at pos: (its bytes, or None when larger than item_limit or not kept,
        its size). Never holds more than item_limit of it."""
        buf_start = self.pos
        file_start = self.offset + buf_start
        self.item_start = buf_start if keep else None
        depth = 0
        first = self.buf[buf_start]
        i = buf_start
        if first == 0x22:  # "
            i = self._string_end(i + 1)
        elif first in b"[{":
            while True:
                match = _STRUCTURAL.search(self.buf, i)
                if match is None:
                    i = len(self.buf)
                    i -= self._more(i)
                    continue
                j = match.start()
                byte = self.buf[j]
                if byte == 0x22:
                    i = self._string_end(j + 1)
                elif byte in b"[{":
                    run = _OPENING_RUN.match(self.buf, j)
                    assert run is not None  # buf[j] opens one
                    end = run.end()
                    depth += self.buf.count(b"[", j, end) + self.buf.count(b"{", j, end)
                    i = end
                else:
                    run = _CLOSING_RUN.match(self.buf, j)
                    assert run is not None  # buf[j] closes one
                    end = run.end()
                    if end - j < depth:
                        depth -= end - j
                        i = end
                    else:
                        i = j + depth
                        break
        else:  # a number, a literal, or something that is not JSON: up to the next delimiter
            while (match := _SCALAR_END.search(self.buf, i)) is None:
                i = len(self.buf)
                i -= self._more(i)
            i = match.start()
            if i == self.pos:
                self.item_start = None
                self.fail("expected a value")
        self.pos = i
        size = self.offset + i - file_start
        start, self.item_start = self.item_start, None
        if start is None or size > self.item_limit:
            return None, size
        return memoryview(self.buf)[start:i], size

    # -- items ---------------------------------------------------------------------------------

    def _group(self, window: int) -> list | bool:
        """The items in about `window` bytes from pos, parsed in one orjson call: the list of them,
        True when orjson refused them (a smaller group may do), False when there is no group here."""
        buf, start = self.buf, self.pos
        end = min(len(buf), start + window)
        # The last `},{` (or `}, {` with whitespace) inside the window ends an item, if any does: a
        # wrong guess (inside a string, or between two objects of an inner array) leaves a group that
        # is not a list of whole values, which orjson refuses.
        cut = buf.rfind(b"},{", start, end)
        if cut < 0:
            cut = end
            for _ in range(64):
                cut = buf.rfind(b"},", start, cut)
                if cut < 0 or _NEXT_IS_OPEN_BRACE.match(buf, cut + 2, end):
                    break
            else:
                cut = -1
            if cut < 0:
                return False
        if self.digit_runs and self._long_digits(start, cut + 1):
            return True
        # Parsed in place as `[item,...,item]`: the byte before the first item (the array's `[`, a
        # comma or whitespace, kept by _drop_before) and the comma after the last are swapped for
        # brackets for the call.
        before = buf[start - 1]
        buf[start - 1], buf[cut + 1] = 0x5B, 0x5D
        try:
            with memoryview(buf) as view, view[start - 1 : cut + 2] as group:
                items = orjson.loads(group)
        except orjson.JSONDecodeError:
            return True
        finally:
            buf[start - 1], buf[cut + 1] = before, 0x2C
        self.pos = cut + 1
        return items

    def _one(self) -> Any:
        """The item at pos, read on its own."""
        position = self.offset + self.pos
        text, size = self.scan_value()
        if text is None:
            return Unread(
                f"record larger than {self.item_limit} bytes ({size} bytes from byte {position} of the "
                "decompressed file), skipped unread"
            )
        with text:
            if not (self.digit_runs and self._long_digits(self.pos - size, self.pos)):
                try:
                    return _record_of(orjson.loads(text))
                except orjson.JSONDecodeError:
                    pass
            data = bytes(text)
        try:
            return _record_of(loads_json(data.decode("utf-8")))  # UTF-8: the reader made sure
        except (ValueError, RecursionError):
            return data  # read again, and quarantined with the reason, by the Ingestor

    def items(self) -> Iterator[Any]:
        """The items of the array whose `[` is at pos; pos ends after its `]`."""
        self.pos += 1
        if self.peek() == 0x5D:
            self.pos += 1
            return
        window = GROUP_BYTES
        while True:
            self.fill(window + 1)
            group = self._group(window)
            if isinstance(group, list):
                for item in group:
                    yield _record_of(item)
                window = min(2 * window, GROUP_BYTES)
            elif group and window > _MIN_GROUP:
                window //= 2
                continue
            else:
                yield self._one()
                window = _MIN_GROUP  # and twice as large after each group read whole
            byte = self.peek()
            if byte == 0x2C:
                self.pos += 1
                self.skip_whitespace()
            elif byte == 0x5D:
                self.pos += 1
                return
            else:
                self.fail("expected ',' or ']' after an item")

    def key(self) -> str | None:
        """The member name at pos (None if it is not a string kmsdash could look for); pos after the ':'."""
        if self.peek() != 0x22:
            self.fail("expected a member name")
        text, _ = self.scan_value()
        name = None
        if text is not None:
            with text:
                if len(text) <= _KEY_LIMIT:
                    try:
                        name = orjson.loads(text)
                    except orjson.JSONDecodeError:
                        name = None
        if self.peek() != 0x3A:
            self.fail("expected ':'")
        self.pos += 1
        self.peek()
        return name

    def document(self) -> Iterator[Any]:
        self.fill(len(_BOM))
        if self.buf.startswith(_BOM):
            self.pos = len(_BOM)
        self.skip_whitespace_or_end()
        first = self.buf[self.pos] if self.pos < len(self.buf) else None
        if first == 0x5B:
            yield from self.items()
        elif first == 0x7B:
            self.pos += 1
            if self.peek() == 0x7D:
                raise FileError(f"{self.name}: unknown shape (an empty object)")
            field = self.key()
            if field not in ("Records", "Events") or self.buf[self.pos] != 0x5B:
                found = field[:40] if isinstance(field, str) else "a name that is not text"
                raise FileError(f"{self.name}: unknown shape (expected a Records or Events array, found {found!r})")
            yield from self.items()
            # Later members: another array of the same name is read too (a JSON reader would keep only
            # one of them, so none may hide records); anything else is stepped over unread.
            while (byte := self.peek()) == 0x2C:
                self.pos += 1
                again = self.key() == field
                if again and self.buf[self.pos] == 0x5B:
                    yield from self.items()
                else:
                    self.scan_value(keep=False)
            if byte != 0x7D:
                self.fail("expected ',' or '}' after a member")
            self.pos += 1
        else:
            raise FileError(f"{self.name}: not a CloudTrail JSON document")
        if not self.at_end():
            self.fail("unexpected data after the document")

    def skip_whitespace_or_end(self) -> None:
        while True:
            match = _WHITESPACE.match(self.buf, self.pos)
            assert match is not None  # it matches the empty string
            self.pos = match.end()
            if self.pos < len(self.buf) or not self._read():
                if self.pos >= len(self.buf) and self.pending is not None:
                    raise self.pending
                return


def iter_file_records(
    stream: BinaryIO, *, name: str, max_decompressed: int | None = None, max_record_bytes: int | None = None
) -> Iterator[dict | str | bytes | Unread]:
    """Records of one CloudTrail file, gzip or plain (detected by magic bytes), either
    {"Records": [...]} (S3 log format; yields dicts) or {"Events": [{..., "CloudTrailEvent": "<json>"}]}
    (LookupEvents format; yields the CloudTrailEvent strings), for Ingestor.add. An item no parser
    reads is yielded as its bytes, one too large as Unread. Memory stays within a few times
    item_limit(max_record_bytes) whatever the content; raises FileError (after yielding every item
    before the fault) on truncation, corruption, bytes that are not JSON between items, or when the
    decompressed size passes max_decompressed (default settings.KMSDASH_MAX_DECOMPRESSED_BYTES)."""
    limit = settings.KMSDASH_MAX_DECOMPRESSED_BYTES if max_decompressed is None else max_decompressed
    record_bytes = settings.KMSDASH_MAX_RECORD_BYTES if max_record_bytes is None else max_record_bytes
    head = stream.read(2)
    reader = _Reader(stream, head, gzipped=head == GZIP_MAGIC, limit=limit, name=name)
    yield from _Scanner(reader, name=name, item_limit=item_limit(record_bytes)).document()


def _record_of(item: Any) -> Any:
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
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES)))
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
