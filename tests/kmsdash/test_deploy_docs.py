"""docs/deploy.md and deploy/: the guide names every variable the settings read, and the units and
the environment file it installs are consistent with it."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
GUIDE = (ROOT / "docs/deploy.md").read_text()
UNITS = ROOT / "deploy/systemd"
READERS = re.compile(r'\b(?:getenv|envbool|envint|envlist|required|read_secret|_email)\("([A-Z][A-Z0-9_]+)"')


def variables_read() -> set[str]:
    """Every environment variable kmsdash/settings.py and gunicorn.conf.py read, by reading them."""
    names: set[str] = set()
    settings = (ROOT / "kmsdash/settings.py").read_text()
    for name in READERS.findall(settings):
        names.add(name)
    # read_secret(name) also reads name_FILE; _email(name) reads KMSDASH_name before name.
    names |= {f"{name}_FILE" for name in re.findall(r'read_secret\("([A-Z0-9_]+)"\)', settings)}
    names |= {f"KMSDASH_{name}" for name in re.findall(r'_email\("([A-Z0-9_]+)"', settings)}
    names |= set(READERS.findall((ROOT / "gunicorn.conf.py").read_text()))
    return names


def test_the_guide_names_every_variable_the_settings_read():
    names = variables_read()
    assert {"DATABASE_URL", "KMSDASH_SECRET_KEY_FILE", "KMSDASH_METRICS_TOKEN", "KMSDASH_WEB_BIND"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in GUIDE and not _email_family(name))
    assert not missing, f"docs/deploy.md does not list {missing} (see its 'The environment' section)"


def _email_family(name: str) -> bool:
    # KMSDASH_EMAIL_HOST etc.: the guide says each KMSDASH_<name> wins over the standard <name> it lists.
    return name.startswith("KMSDASH_") and f"`{name.removeprefix('KMSDASH_')}`" in GUIDE


README = (ROOT / "README.md").read_text()
# A variable read with a literal default: envint("KMSDASH_X", 10_000), os.getenv("KMSDASH_Y", "groups").
LITERAL_DEFAULT = re.compile(
    r'\b(?:envint|envbool|envlist|getenv)\("(KMSDASH_[A-Z0-9_]+)",\s*(?:"([^"]*)"|([0-9_]+))\)'
)


def readme_settings() -> tuple[set[str], dict[str, str]]:
    """The variables the README's tables name, and the default cell of each one that opens a row."""
    named: set[str] = set()
    defaults: dict[str, str] = {}
    for line in README.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        named.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line))
        if len(cells) >= 3:
            for name in re.findall(r"`(KMSDASH_[A-Z0-9_]+)`", cells[0]):
                defaults.setdefault(name, cells[1])  # the settings table comes first; figures may follow
    return named, defaults


def test_the_readme_names_every_kmsdash_variable_in_its_settings_tables():
    named, _ = readme_settings()
    missing = sorted(name for name in variables_read() if name.startswith("KMSDASH_") and name not in named)
    assert not missing, f"README.md's settings tables do not list {missing}"


def test_the_readme_gives_each_variable_the_default_the_settings_use():
    _, defaults = readme_settings()
    settings = (ROOT / "kmsdash/settings.py").read_text()
    found = LITERAL_DEFAULT.findall(settings)
    assert len(found) > 40 and ("KMSDASH_STATEMENT_TIMEOUT_MS", "", "10_000") in found
    wrong = []
    for name, text, number in found:
        default = number.replace("_", "") if number else text
        cell = defaults.get(name, "")
        # A default written as a value (`10000`) must be the settings' one; a described one
        # ("unset", "AWS's published defaults") is read by people.
        shown = re.match(r"`([^`]*)`", cell)
        if shown and shown.group(1) != default:
            wrong.append(f"{name}: README says {shown.group(1)!r}, the settings use {default!r}")
        elif not shown and default not in ("", "{}", "False") and not cell:
            wrong.append(f"{name}: README gives no default (the settings use {default!r})")
    assert not wrong


def test_the_example_environment_file_sets_only_variables_kmsdash_reads():
    names = variables_read() | {"DJANGO_SETTINGS_MODULE", "AWS_DEFAULT_REGION", "AWS_REGION"}
    unknown = []
    for line in (UNITS / "kmsdash.env.example").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and value and not value.startswith(("'", '"')), f"not NAME=value as systemd reads it: {line}"
        if name not in names:
            unknown.append(name)
    assert not unknown, f"kmsdash.env.example sets variables nothing reads: {unknown}"


@pytest.mark.parametrize("unit", ["kmsdash-web.service", "kmsdash-worker@.service", "kmsdash-beat.service"])
def test_each_unit_runs_as_kmsdash_with_the_environment_file_and_a_program_of_the_venv(unit):
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read_string((UNITS / unit).read_text())
    service = parser["Service"]
    assert service["EnvironmentFile"] == "/etc/kmsdash/kmsdash.env"
    assert service["User"] == "kmsdash" and service["WorkingDirectory"] == "/opt/kmsdash"
    program, *arguments = service["ExecStart"].split()
    assert program.startswith("/opt/kmsdash/.venv/bin/")
    assert (ROOT / ".venv/bin" / Path(program).name).exists(), f"{program} is not installed by requirements.txt"
    assert f"`{unit}`" in GUIDE or unit in GUIDE
    if "gunicorn" in program:
        assert arguments == ["-c", "gunicorn.conf.py", "kmsdash.wsgi"]
    else:
        assert arguments[:3] == ["-A", "kmsdash", "beat" if "beat" in unit else "worker"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"
