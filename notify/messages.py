"""What each channel sends for one notification. Every alert field may hold attacker-chosen text
(principal and session names, error codes, summaries quoting policies), so each format makes it
inert in its own way: JSON-encoded (and <, >, & escaped) for webhooks and SNS, HTML-escaped by
the template for email, and stripped of anything a chat service would read as markup for apprise.
"""

from __future__ import annotations

import json
import re

from django.conf import settings
from django.template.loader import render_to_string

from audits.templatetags.kmsdash_tags import visible

# The fields a message shows, in order, with their labels (the keys of `alerts --format json`).
FIELDS = (
    ("kind", "Kind"),
    ("severity", "Severity"),
    ("state", "State"),
    ("account", "Account"),
    ("region", "Region"),
    ("key", "Key"),
    ("principal", "Principal"),
    ("error_code", "Error code"),
    ("first_event", "First event"),
    ("last_event", "Last event"),
    ("detected_at", "Detected"),
    ("count", "Count"),
    ("observed", "Observed"),
    ("baseline", "Baseline"),
    ("threshold", "Threshold"),
    ("summary", "Summary"),
)
SUBJECT_MAX = 200
_PATH = re.compile(r"/(?!/)[A-Za-z0-9/_.-]*")


def link(alert: dict) -> str:
    """The alert page: KMSDASH_BASE_URL + its path. Only a path of this site is ever linked."""
    path = alert.get("url") or ""
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        return ""
    return settings.KMSDASH_BASE_URL + path


def _one_line(value: object) -> str:
    # Control and bidi characters as visible markers: no forged line, no reordered text.
    return visible("" if value is None else str(value))


def rows(alert: dict) -> list[tuple[str, str]]:
    return [(label, _one_line(alert.get(name))) for name, label in FIELDS if alert.get(name) not in (None, "")]


def subject(payload: dict, limit: int = SUBJECT_MAX) -> str:
    alert = payload["alert"]
    text = _one_line(
        f"[kmsdash] {str(alert.get('severity') or '').upper()} {alert.get('kind')} {payload['event']}: "
        f"{alert.get('summary') or ''}"
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def webhook_body(delivery: str, payload: dict) -> bytes:
    """The exact bytes signed and sent: deterministic, so every retry carries the same body."""
    alert = payload["alert"]
    document = {"delivery": delivery, "event": payload["event"], "alert": alert, "link": link(alert)}
    text = json.dumps(document, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    # Valid JSON either way; escaped, the body stays inert even where a receiver pastes it into HTML.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def plain_text(payload: dict) -> str:
    alert = payload["alert"]
    lines = [subject(payload, limit=10_000), ""]
    lines += [f"{label}: {value}" for label, value in rows(alert)]
    if url := link(alert):
        lines += ["", f"Alert page: {url}"]
    return "\n".join(lines) + "\n"


def html(payload: dict) -> str:
    alert = payload["alert"]
    return render_to_string(
        "notify/alert_email.html",
        {
            "subject": subject(payload, limit=10_000),
            "event": payload["event"],
            "rows": rows(alert),
            "link": link(alert),
        },
    )


# Chat services read markup in plain text: Slack's <!channel>, <@U123> and <url|text>, markdown
# links [text](url), HTML in some, @mentions, code fences. Each such character becomes a
# look-alike that no service parses, and URL schemes lose their colon so nothing auto-links.
_CHAT_MARKUP = str.maketrans(
    {
        "<": "\u2039",  # ‹
        ">": "\u203a",  # ›
        "[": "\u2045",  # ⁅
        "]": "\u2046",  # ⁆
        "@": "\uff20",  # ＠
        "`": "\u02cb",  # ˋ
        "&": "\uff06",  # ＆
        "|": "\u00a6",  # ¦
    }
)
_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):(?=//)|\b(javascript|data|vbscript|mailto|tel)\s*:")


def chat_safe(value: object) -> str:
    text = _one_line(value).translate(_CHAT_MARKUP)
    return _SCHEME.sub(lambda m: (m.group(1) or m.group(2)) + "\u2236", text)


def chat(payload: dict) -> tuple[str, str]:
    """(title, body) for apprise, sent as plain text. Only the alert page link is a real link."""
    alert = payload["alert"]
    title = "kmsdash: " + chat_safe(subject(payload).removeprefix("[kmsdash] "))
    lines = [f"{label}: {chat_safe(value)}" for label, value in rows(alert)]
    if url := link(alert):
        lines.append(f"Alert page: {url}")
    return title, "\n".join(lines)


def sns_subject(payload: dict) -> str:
    # SNS subjects: at most 100 printable ASCII characters, no line breaks.
    text = subject(payload, limit=100).encode("ascii", "replace").decode()
    return "".join(c if " " <= c <= "~" else "?" for c in text)
