"""Source-level guards: nothing in the templates or code may switch off escaping or run inline script.

Attacker-chosen text (user agents, error messages, session names, tag values, policies) reaches
almost every page; Django's autoescaping and a script-src 'self' policy are what keep it inert.
These checks fail on the constructs that bypass either. A reviewed exception goes in ALLOWED
with the reason.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from tests.support import manage_py

ROOT = Path(settings.BASE_DIR)
APPS = ("kmsdash", "audits", "costs", "inventory", "notify", "emulator", "demo")
SKIP_DIRS = {"migrations", "__pycache__", ".venv", "node_modules", "vendor"}

TEMPLATE_RULES = {
    "the |safe filter": re.compile(r"\|\s*safe(seq)?\b"),
    "autoescape off": re.compile(r"{%\s*autoescape\s+off"),
    "an hx-on attribute (inline script)": re.compile(r"\bhx-on\b|\bhx-on:|\bdata-hx-on"),
    "hx-vars / js: hx-vals (eval)": re.compile(r"\bhx-vars\b|hx-vals\s*=\s*['\"]\s*js:"),
    "an inline event handler attribute": re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE),
    "a javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
    "an inline <script> (only <script src> and json_script data are allowed)": re.compile(
        r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE
    ),  # The policy's style-src has no 'unsafe-inline': a browser ignores such a style (and reports it).
    "an inline style (a style attribute or a <style> element)": re.compile(
        r"<style\b|<[^>]*\sstyle\s*=", re.IGNORECASE
    ),
}
PYTHON_RULES = {
    "mark_safe()": re.compile(r"\bmark_safe\s*\("),
    "SafeString / SafeText": re.compile(r"\bSafe(String|Text)\s*\("),
    "format_html() with a format string that is not a literal": re.compile(r"\bformat_html\s*\(\s*(?![\"'])"),
    "format_html_join() with a format string that is not a literal": re.compile(
        r"\bformat_html_join\s*\([^,]*,\s*(?![\"'])"
    ),
    "an HTML-building f-string passed to format_html": re.compile(r"\bformat_html\s*\(\s*f[\"']"),
}
SCRIPT_RULES = {
    "innerHTML / outerHTML assignment": re.compile(r"\.(inner|outer)HTML\s*[+]?="),
    "insertAdjacentHTML": re.compile(r"insertAdjacentHTML"),
    "document.write": re.compile(r"document\.write"),
    "eval / new Function": re.compile(r"\beval\s*\(|new\s+Function\s*\("),
    "string setTimeout": re.compile(r"setTimeout\s*\(\s*[\"']"),
}
# (path relative to the project, rule name): why it is fine.
ALLOWED: dict[tuple[str, str], str] = {
    ("templates/notify/alert_email.html", "an inline style (a style attribute or a <style> element)"): (
        "an e-mail body, never served as a page under the CSP; mail clients ignore linked stylesheets"
    ),
}


def files(suffixes: tuple[str, ...], roots) -> list[Path]:
    found = []
    for root in roots:
        base = ROOT / root
        if not base.exists():
            continue
        for path in base.rglob("*"):
            if path.suffix in suffixes and not SKIP_DIRS.intersection(path.relative_to(ROOT).parts):
                found.append(path)
    return sorted(found)


TEMPLATE_COMMENTS = re.compile(r"{#.*?#}|{%\s*comment\s*%}.*?{%\s*endcomment\s*%}", re.DOTALL)


def blank_out(match: re.Match) -> str:
    return re.sub(r"[^\n]", " ", match.group())  # keeps line numbers right


def violations(paths: list[Path], rules: dict[str, re.Pattern]) -> list[str]:
    found = []
    for path in paths:
        relative = str(path.relative_to(ROOT))
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".html", ".txt"):
            text = TEMPLATE_COMMENTS.sub(blank_out, text)
        for rule, pattern in rules.items():
            if (relative, rule) in ALLOWED:
                continue
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{relative}:{line}: {rule}")
    return found


def template_files() -> list[Path]:
    return files((".html", ".txt"), ("templates", *APPS))


def test_templates_never_switch_off_escaping_or_carry_inline_script():
    paths = template_files()
    assert len(paths) >= 5  # the walk found the templates
    assert violations(paths, TEMPLATE_RULES) == []


def test_python_code_never_marks_text_safe():
    paths = files((".py",), APPS)
    assert len(paths) >= 10
    assert violations(paths, PYTHON_RULES) == []


def test_the_project_script_never_turns_data_into_html_or_code():
    paths = files((".js",), ("static/kmsdash",))
    assert paths
    assert violations(paths, SCRIPT_RULES) == []


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("{{ event.user_agent|safe }}", "the |safe filter"),
        ("{{ rows|safeseq }}", "the |safe filter"),
        ("{% autoescape off %}{{ x }}{% endautoescape %}", "autoescape off"),
        ('<button hx-on:click="alert(1)">', "an hx-on attribute (inline script)"),
        ("<div hx-vals='js:{a: 1}'>", "hx-vars / js: hx-vals (eval)"),
        ('<a href="#" onclick="go()">', "an inline event handler attribute"),
        ("<img src=x onerror='x'>", "an inline event handler attribute"),
        ('<a href="javascript:go()">', "a javascript: URL"),
        ("<script>alert(1)</script>", "an inline <script> (only <script src> and json_script data are allowed)"),
        (
            '<script type="module">go()</script>',
            "an inline <script> (only <script src> and json_script data are allowed)",
        ),
        ('<td style="width: 3em">', "an inline style (a style attribute or a <style> element)"),
        ("<div class=bar\n     STYLE='color:red'>", "an inline style (a style attribute or a <style> element)"),
        ("<style>td { color: red }</style>", "an inline style (a style attribute or a <style> element)"),
    ],
)
def test_the_template_rules_catch_what_they_are_for(text, rule):
    assert TEMPLATE_RULES[rule].search(text)


@pytest.mark.parametrize(
    "text",
    [
        "<script src=\"{% static 'kmsdash/app.js' %}\" defer></script>",
        '{{ figure|json_script:"calls" }}',
        '<button hx-get="/x" hx-swap="innerHTML">',
        "{{ note|safe_truncate }}",  # a different filter name
        "<section data-onload-target='x'>",
        '<link rel="stylesheet" href="{% static \'kmsdash/app.css\' %}">',
        '<p class="styled">a style= in text, outside a tag</p>',
    ],
)
def test_the_template_rules_leave_ordinary_markup_alone(text):
    assert not [rule for rule, pattern in TEMPLATE_RULES.items() if pattern.search(text)]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("return mark_safe(html)", "mark_safe()"),
        ("format_html(template, x)", "format_html() with a format string that is not a literal"),
        ('format_html(f"<b>{x}</b>")', "format_html() with a format string that is not a literal"),
        ("SafeString(x)", "SafeString / SafeText"),
    ],
)
def test_the_python_rules_catch_what_they_are_for(text, rule):
    assert PYTHON_RULES[rule].search(text)
    assert not PYTHON_RULES[rule].search('format_html("<pre>{}</pre>", text)')


# --- manage.py check --deploy ----------------------------------------------------------------


def deploy_check(**env: str) -> subprocess.CompletedProcess:
    return manage_py("check", "--deploy", "--fail-level", "WARNING", **env)


PRODUCTION = {
    # Not a real secret: 64 characters of the kind `manage.py` would generate, for this test only.
    "KMSDASH_SECRET_KEY": "t3st-0nly-9f8e7d6c5b4a39281706f5e4d3c2b1a0-ZyXwVuTsRqPoNmLkJiHgFeDc",
    "KMSDASH_HTTPS": "True",
    "KMSDASH_DEBUG": "False",
    "KMSDASH_ALLOWED_HOSTS": "example.org",
}


def test_the_deploy_check_passes_with_production_settings():
    result = deploy_check(**PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_deploy_check_fails_with_the_development_key():
    env = {k: v for k, v in PRODUCTION.items() if k != "KMSDASH_SECRET_KEY"}
    result = deploy_check(**env)
    assert result.returncode != 0
    assert "security.W009" in result.stderr


def test_the_development_key_is_an_error_outside_the_demo_not_only_a_warning():
    env = {k: v for k, v in PRODUCTION.items() if k != "KMSDASH_SECRET_KEY"}
    result = manage_py("check", "--deploy", **env)  # the default fail level: errors only
    assert result.returncode != 0
    assert "kmsdash.E001" in result.stderr
    demo = manage_py("check", "--deploy", **env, KMSDASH_DEMO="True")
    assert "kmsdash.E001" not in demo.stderr


def test_the_deploy_check_passes_with_the_key_in_a_file(tmp_path):
    key = tmp_path / "secret_key"
    key.write_text(PRODUCTION["KMSDASH_SECRET_KEY"] + "\n")
    env = {k: v for k, v in PRODUCTION.items() if k != "KMSDASH_SECRET_KEY"}
    result = deploy_check(**env, KMSDASH_SECRET_KEY_FILE=str(key))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_key_file_that_cannot_be_read_stops_every_command_with_its_name(tmp_path):
    result = manage_py("check", KMSDASH_SECRET_KEY_FILE=str(tmp_path / "missing"))
    assert result.returncode != 0
    assert "KMSDASH_SECRET_KEY_FILE" in result.stderr and "missing" in result.stderr


def test_the_deploy_check_fails_with_debug_on_or_without_https():
    debug = deploy_check(**{**PRODUCTION, "KMSDASH_DEBUG": "True"})
    assert debug.returncode != 0 and "security.W018" in debug.stderr
    plain_http = deploy_check(**{**PRODUCTION, "KMSDASH_HTTPS": "False"})
    assert plain_http.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in plain_http.stderr


def test_template_comments_may_mention_what_the_rules_forbid():
    text = (
        "{# <script> and |safe are only words here #}\n{% comment %}<a onclick=x>{% endcomment %}\n<script>x</script>"
    )
    cleaned = TEMPLATE_COMMENTS.sub(blank_out, text)
    assert cleaned.count("\n") == 2
    found = [pattern.search(cleaned) for pattern in TEMPLATE_RULES.values()]
    assert [match.group() for match in found if match] == ["<script>"]
