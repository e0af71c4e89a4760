"""Safe, streaming CSV: RFC 4180 quoting, formula injection neutralised, every export audited.

Text cells come from whoever calls AWS (user agents, session names, tag values). A cell that a
spreadsheet would read as a formula gets a leading apostrophe; numbers are written as numbers.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from .models import ExportAudit

# OWASP CSV injection triggers, plus NUL (ASVS 5.0 1.2.10), and the fullwidth and small forms of
# = + - @ (and the minus sign), which spreadsheets in East Asian locales read as the ASCII ones.
FORMULA_TRIGGERS = frozenset("=+-@\t\r\n\0") | frozenset("\uff1d\uff0b\uff0d\uff20\ufe66\ufe62\ufe63\ufe6b\u2212")
# What a spreadsheet may skip before the first character it reads: whitespace, and the invisible
# format characters (zero-width space and joiners, the BOM, bidi marks, soft hyphen: category Cf).
_INVISIBLE = (
    frozenset(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace() or unicodedata.category(c) == "Cf")
    - FORMULA_TRIGGERS
)
_LEADING_INVISIBLE = re.compile("[" + "".join(map(re.escape, sorted(_INVISIBLE))) + "]*")
# First characters that can make a text cell a formula: the triggers, and whatever may stand before
# one. Any other first character settles it without looking further.
RISKY_FIRST_CHARACTERS = FORMULA_TRIGGERS | _INVISIBLE


def neutralize(value: Any) -> Any:
    """Make one cell inert for spreadsheets; numbers and dates pass through unchanged."""
    if type(value) is not str:  # the common case, str, goes straight to the check
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float | Decimal):
            return value
        if isinstance(value, datetime | date):
            return value.isoformat()
        value = str(value)
    return neutralize_text(value)


def neutralize_text(value: str) -> str:
    """`neutralize` for a cell known to be a str, cheap enough to call on every cell of a page.

    A cell whose first visible character is a trigger gets the apostrophe, whatever invisible
    characters stand before it."""
    if value[:1] in RISKY_FIRST_CHARACTERS:
        if value[0] in FORMULA_TRIGGERS:
            return "'" + value
        invisible = _LEADING_INVISIBLE.match(value)
        assert invisible is not None  # it matches the empty string
        if value[invisible.end() :][:1] in FORMULA_TRIGGERS:
            return "'" + value
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """Yield the CSV text line by line (CRLF line ends, minimal RFC 4180 quoting)."""
    writer = csv.writer(_Echo(), lineterminator="\r\n")
    yield writer.writerow([neutralize(h) for h in header])
    for row in rows:
        yield writer.writerow([neutralize(cell) for cell in row])


def audited_csv(
    header: Sequence[str], rows: Iterable[Sequence[Any]], audit: ExportAudit, chunk_rows: int = 500
) -> Iterator[bytes]:
    """Stream UTF-8 CSV bytes of rows of any cells (each neutralised), then complete `audit`.

    The audit row is completed when the stream ends: a client that disconnects mid-stream leaves
    an 'aborted' row with the rows and hash of what was actually sent.
    """
    cells = ([neutralize(cell) for cell in row] for row in rows)
    pages = iter(lambda: list(itertools.islice(cells, chunk_rows)), [])
    return audited_csv_pages(header, pages, audit)


def audited_csv_pages(
    header: Sequence[str], pages: Iterable[Sequence[Sequence[Any]]], audit: ExportAudit
) -> Iterator[bytes]:
    """`audited_csv` for large exports: one chunk per page of rows, after the header on its own.

    The cells must already be inert: passed through `neutralize` / `neutralize_text` or known
    never to start with a trigger (numbers, ISO times, JSON objects). Writing a whole page with
    one `writerows` call keeps the per-row cost in C; the header leaves before the first query.

    At most `audit.row_cap` rows are written (when set): the rest is not read, and the audit row
    says the file was cut short (`truncated`).
    """
    digest = hashlib.sha256()
    count = 0
    truncated = False
    cap = audit.row_cap
    status = ExportAudit.Status.ABORTED
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    pages = iter(pages)
    try:
        writer.writerow([neutralize(h) for h in header])
        for page in itertools.chain([()], pages):
            full = cap is not None and count + len(page) >= cap
            if full:
                assert cap is not None  # full says so
                rest, page = page[cap - count :], page[: cap - count]
                # One more row settles whether the cap cut anything off.
                truncated = len(rest) > 0 or any(len(more) for more in pages)
            writer.writerows(page)
            data = text.getvalue().encode("utf-8")
            text.seek(0)
            text.truncate()
            digest.update(data)
            count += len(page)
            yield data
            if full:
                break
        status = ExportAudit.Status.COMPLETED
    except Exception:
        status = ExportAudit.Status.FAILED
        raise
    finally:
        ExportAudit.objects.filter(pk=audit.pk).update(
            status=status, rows=count, truncated=truncated, sha256=digest.hexdigest(), finished_at=timezone.now()
        )


def web_row_cap() -> int | None:
    """KMSDASH_EXPORT_MAX_ROWS, the most rows a web export writes (None: 0 means no cap)."""
    return settings.KMSDASH_EXPORT_MAX_ROWS or None


def start_export_audit(
    *, user, kind: str, filters: dict[str, Any], via: str = "web", row_cap: int | None = None
) -> ExportAudit:
    return ExportAudit.objects.create(
        user=user if user is not None and user.is_authenticated else None,
        username=user.get_username() if user is not None and user.is_authenticated else "",
        kind=kind,
        filters=filters,
        via=via,
        row_cap=row_cap,
    )
