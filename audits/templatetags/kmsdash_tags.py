"""Display helpers for text that comes from AWS records, which an attacker may have chosen."""

from __future__ import annotations

import json
import re
import unicodedata

from django import template

from audits import keyurls

register = template.Library()

CLIP = 256

# Bidi embeddings, overrides and isolates, the marks, and invisible separators: each can make
# displayed text read differently from what is stored.
_INVISIBLE = {0x061C, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2028, 0x2029, 0xFEFF}
_INVISIBLE |= set(range(0x202A, 0x202F)) | set(range(0x2060, 0x206A))


def _marker(char: str) -> str:
    return f"⟨U+{ord(char):04X}⟩"


def _hidden(char: str, keep: str) -> bool:
    if char in keep:
        return False
    return ord(char) in _INVISIBLE or unicodedata.category(char) == "Cc"


_SUSPECT = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


@register.filter(is_safe=False)
def visible(value: object, keep: str = "") -> str:
    """Control and bidi characters as visible ⟨U+XXXX⟩ markers; `keep` lists characters to leave."""
    text = "" if value is None else str(value)
    if not _SUSPECT.search(text):
        return text
    return "".join(_marker(c) if _hidden(c, keep) else c for c in text)


@register.filter(is_safe=False)
def visible_lines(value: object) -> str:
    """`visible`, keeping line breaks: for pretty-printed text in <pre>."""
    return visible(value, "\n")


@register.filter(is_safe=False)
def clip(value: object, length: int = CLIP) -> str:
    """For lists: cut at `length` characters (the full value is in the detail), then `visible`."""
    text = "" if value is None else str(value)
    if len(text) > length:
        text = text[: length - 1] + "…"
    return visible(text)


@register.filter
def key_url(key: str) -> str:
    """The key's detail page, or the explorer for a key no path can carry (audits/keyurls.py)."""
    return keyurls.key_url(key)


@register.filter
def principal_url(arn: str) -> str:
    """A principal's page, or '' for a principal no path can carry (audits/keyurls.py)."""
    return keyurls.principal_url(str(arn or "")) or ""


@register.filter
def short_key(key: str) -> str:
    """A key ARN as its key id (account and region have their own columns), else the value itself."""
    text = "" if key is None else str(key)
    if text.startswith("arn:") and ":key/" in text:
        return clip(text.rsplit(":key/", 1)[1], 64)
    return clip(text, 64)


SHORT_ID = 8


def short_id(key: str) -> str:
    """A key ARN's key id cut to its first 8 characters (after a multi-Region `mrk-`), as `git`
    shortens a commit; the full ARN is in the label's title. Other values: `short_key`."""
    text = "" if key is None else str(key)
    if text.startswith("arn:") and ":key/" in text:
        key_id = text.rsplit(":key/", 1)[1]
        prefix = "mrk-" if key_id.startswith("mrk-") else ""
        rest = key_id[len(prefix) :]
        return visible(prefix + rest[:SHORT_ID] + ("…" if len(rest) > SHORT_ID else ""))
    return short_key(text)


@register.inclusion_tag("_key_label.html", takes_context=True)
def key_label(context, key: str, alias: str | None = None) -> dict:
    """A key as every page names it: its alias when the inventory knows one, its short key id,
    the full ARN on hover and a copy button, linking to the key's page (for those who may see it).

    `alias` is the caller's own lookup ('' for none); without it, the page's `key_aliases` (one
    query per page, see kmsdash.context_processors) names the key.
    """
    text = "" if key is None else str(key)
    if alias is None:
        aliases = context.get("key_aliases")
        alias = aliases.get(text, "") if aliases is not None and text else ""
    return {
        "key": text,
        "alias": alias,
        "short": short_id(text),
        "url": key_url(text) if text and context.get("can_audit") else "",
    }


@register.simple_tag(takes_context=True)
def naming_key(context, text: str, key: str, length: int = CLIP) -> str:
    """`text` (an alert's summary, say) with `key`'s ARN written as its label's text (alias when
    known, short id), for a line shown next to that key's label: the ARN is the label's title and
    copy value, not written out a second time. Clipped and `visible` like `clip` (simple_tag output
    is escaped)."""
    text, key = "" if text is None else str(text), "" if key is None else str(key)
    if key and key in text:
        aliases = context.get("key_aliases")
        alias = aliases.get(key, "") if aliases is not None else ""
        text = text.replace(key, f"{alias} ({short_id(key)})" if alias else short_id(key))
    return clip(text, length)


@register.filter(is_safe=False)
def tojson(value: object) -> str:
    """JSON for a data-* attribute (autoescaping then escapes it for the attribute): the one way a
    figure (audits.charts.figure) reaches the page, as data-figure-json, which app.js draws.

    Chart data travels in an attribute rather than a json_script block because htmx drops every
    <script> element from swapped fragments (htmx-config allowScriptTags: false).
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
