"""scripts/lib.sh builds the virtual environment only on an interpreter whose cookie parser is not
quadratic (CVE-2024-7592), and rebuilds or refuses one built on an interpreter that is."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # interpreters and shells in subprocesses, timed on purpose

ROOT = Path(__file__).resolve().parent.parent.parent
LIB = ROOT / "scripts/lib.sh"

# CPython 3.11.7's http.cookies._unquote, the code CVE-2024-7592 is about: each step searches the
# rest of the value again, so a value of n backslashes costs n^2/2 character steps.
QUADRATIC_UNQUOTE = r"""
import http.cookies, re

_OctalPatt = re.compile(r"\\[0-3][0-7][0-7]")
_QuotePatt = re.compile(r"[\\].")


def _unquote(str):
    if str is None or len(str) < 2:
        return str
    if str[0] != '"' or str[-1] != '"':
        return str
    str = str[1:-1]
    i = 0
    n = len(str)
    res = []
    while 0 <= i < n:
        o_match = _OctalPatt.search(str, i)
        q_match = _QuotePatt.search(str, i)
        if not o_match and not q_match:
            res.append(str[i:])
            break
        j = k = -1
        if o_match:
            j = o_match.start(0)
        if q_match:
            k = q_match.start(0)
        if q_match and (not o_match or k < j):
            res.append(str[i:k])
            res.append(str[k + 1])
            i = k + 2
        else:
            res.append(str[i:j])
            res.append(chr(int(str[j + 1:j + 4], 8)))
            i = j + 4
    return "".join(res)


http.cookies._unquote = _unquote
"""


def lib(command: str, *args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """`command` in bash with scripts/lib.sh loaded; "$1"... are `args`."""
    return subprocess.run(
        ["bash", "-c", f". {LIB} && {command}", "lib", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def vulnerable_python(tmp_path) -> Path:
    """This test run's interpreter with the unpatched cookie parser put back: a stand-in for pyenv's
    3.11.7 or 3.12.1."""
    site = tmp_path / "quadratic-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(QUADRATIC_UNQUOTE)
    return executable(tmp_path / "vulnerable/python3", f'#!/bin/sh\nPYTHONPATH="{site}" exec "{sys.executable}" "$@"\n')


def test_this_test_runs_interpreter_passes_the_cookie_check_in_well_under_a_second():
    started = time.monotonic()
    result = lib('python_problem "$1" base', sys.executable)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr
    assert time.monotonic() - started < 5  # the interpreter's start-up is most of it


PARSE_TIME = r"""
import http.cookies, time
started = time.perf_counter()
http.cookies.SimpleCookie('c="' + "\\" * 20000 + '"')
print(time.perf_counter() - started)
"""


def test_the_stand_in_is_really_quadratic(vulnerable_python):
    probe = PARSE_TIME
    slow = float(subprocess.run([vulnerable_python, "-c", probe], capture_output=True, text=True, check=True).stdout)
    fast = float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
    assert slow > 0.5 > fast


def test_an_interpreter_with_the_quadratic_cookie_parser_fails_the_check_naming_the_cve_quickly(vulnerable_python):
    started = time.monotonic()
    result = lib('python_problem "$1" base', str(vulnerable_python))
    took = time.monotonic() - started
    assert result.returncode == 1
    assert "CVE-2024-7592" in result.stdout
    # Three tries stopped at 0.5 s each, not three quadratic parses of several seconds.
    assert took < 2 * 3 * 0.5 + 3


def test_an_interpreter_older_than_required_fails_the_check():
    # This interpreter, held to a minimum it cannot meet.
    result = lib('PYTHON_CHECK=${PYTHON_CHECK/"(3, 11)"/"(99, 0)"}; python_problem "$1"', sys.executable)
    assert result.returncode == 1 and "needs 3.11 or newer" in result.stdout


def project(tmp_path: Path) -> Path:
    """A directory laid out like the project, as far as ensure_venv cares."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(LIB, tmp_path / "lib.sh")
    (tmp_path / "requirements.txt").write_text("Django==5.2.19\n")
    return tmp_path


def recording_python(path: Path, calls: Path) -> Path:
    """A virtual environment's python that only records what it was asked to do (it passes the check)."""
    return executable(path, f'#!/bin/sh\necho "$@" >> "{calls}"\n')


def ensure_venv(workdir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", ". ./lib.sh && ensure_venv"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


@pytest.fixture
def base_python(tmp_path) -> Path:
    """An interpreter that passes the check and whose `-m venv DIR` makes a recording venv."""
    calls = tmp_path / "calls"
    return executable(
        tmp_path / "base/python3",
        f'''#!/bin/sh
if [ "$1" = -m ] && [ "$2" = venv ]; then
    mkdir -p "$3/bin" && printf '#!/bin/sh\\necho "$@" >> "{calls}"\\n' > "$3/bin/python" && chmod +x "$3/bin/python"
    echo "venv $3" >> "{calls}"
    exit 0
fi
exec "{sys.executable}" "$@"
''',
    )


def test_a_venv_this_script_built_on_a_vulnerable_interpreter_is_rebuilt_on_a_patched_one(
    tmp_path, vulnerable_python, base_python
):
    workdir = project(tmp_path / "project")
    (workdir / ".venv/bin").mkdir(parents=True)
    os.symlink(vulnerable_python, workdir / ".venv/bin/python")
    (workdir / ".venv/.requirements.sha256").write_text("an earlier install\n")
    (workdir / ".venv/old-marker").write_text("")

    result = ensure_venv(workdir, KMSDASH_PYTHON=str(base_python))

    assert result.returncode == 0, result.stderr
    assert "CVE-2024-7592" in result.stderr and "Rebuilding .venv" in result.stderr
    assert not (workdir / ".venv/old-marker").exists()
    calls = (tmp_path / "calls").read_text()
    assert "venv .venv" in calls and "-r requirements.txt" in calls


def test_a_vulnerable_venv_that_this_script_did_not_build_is_refused_and_left_alone(tmp_path, vulnerable_python):
    workdir = project(tmp_path / "project")
    (workdir / ".venv/bin").mkdir(parents=True)
    os.symlink(vulnerable_python, workdir / ".venv/bin/python")

    result = ensure_venv(workdir)

    assert result.returncode == 1
    assert "CVE-2024-7592" in result.stderr
    assert (workdir / ".venv/bin/python").is_symlink()


def test_kmsdash_python_that_fails_the_check_is_refused_before_any_venv_exists(tmp_path, vulnerable_python):
    workdir = project(tmp_path / "project")
    result = ensure_venv(workdir, KMSDASH_PYTHON=str(vulnerable_python))
    assert result.returncode == 1
    assert f"KMSDASH_PYTHON={vulnerable_python} has the quadratic cookie parser of CVE-2024-7592" in result.stderr
    assert not (workdir / ".venv").exists()


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="no system python3")
def test_by_default_the_system_python3_is_chosen_over_a_vulnerable_python3_first_on_path(vulnerable_python):
    if lib('python_problem "$1" base', "/usr/bin/python3").returncode != 0:
        pytest.skip("this machine's /usr/bin/python3 fails the check itself")
    path = f"{vulnerable_python.parent}:{os.environ['PATH']}"
    result = lib("pick_python", env={"PATH": path, "KMSDASH_PYTHON": ""})
    assert (result.returncode, result.stdout.strip()) == (0, "/usr/bin/python3"), result.stderr


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="no system python3")
def test_by_default_the_system_python3_is_chosen_even_over_one_first_on_path_that_passes_the_check(tmp_path):
    # The check is a quick probe of one flaw; the distribution's python3 also gets the distribution's
    # other security fixes, which a pyenv or hand-built point release may lack.
    if lib('python_problem "$1" base', "/usr/bin/python3").returncode != 0:
        pytest.skip("this machine's /usr/bin/python3 fails the check itself")
    other = executable(tmp_path / "other/python3", f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    assert lib('python_problem "$1" base', str(other)).returncode == 0
    result = lib("pick_python", env={"PATH": f"{other.parent}:{os.environ['PATH']}", "KMSDASH_PYTHON": ""})
    assert (result.returncode, result.stdout.strip()) == (0, "/usr/bin/python3"), result.stderr


def test_with_no_usable_interpreter_the_error_says_why_each_one_was_refused(vulnerable_python):
    # As on a machine without a system python3, where the only one is pyenv's, first on PATH.
    path = f"{vulnerable_python.parent}:{os.environ['PATH']}"
    result = lib("PYTHON_CANDIDATES=(python3); pick_python", env={"PATH": path, "KMSDASH_PYTHON": ""})
    assert result.returncode == 1
    assert f"{vulnerable_python} has the quadratic cookie parser of CVE-2024-7592" in result.stderr


def test_the_secret_key_file_is_readable_by_its_owner_only_and_kept_across_starts(tmp_path):
    key = tmp_path / "var/secret_key"
    key.parent.mkdir()
    first = subprocess.run(
        ["bash", "-c", f'umask 022; . {LIB}; ensure_secret_key "$1"', "lib", str(key)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Generating a secret key" in first.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    value = key.read_text().strip()
    assert len(value) >= 50 and len(set(value)) >= 5  # what Django's deploy check asks of a key

    second = subprocess.run(
        ["bash", "-c", f'. {LIB}; ensure_secret_key "$1"', "lib", str(key)], capture_output=True, text=True, check=True
    )
    assert key.read_text().strip() == value
    assert "Generating" not in second.stderr


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads the mode of an open file through /proc")
def test_the_secret_key_is_never_readable_by_others_even_while_it_is_written(tmp_path):
    # chmod 600 afterwards would pass the test above: here the mode is read by the process that
    # writes the key, through its own standard output, while it writes.
    real = shutil.which("python3")
    assert real
    seen = tmp_path / "mode-while-written"
    shims = tmp_path / "bin"
    shims.mkdir()
    executable(shims / "python3", f'#!/bin/sh\nstat -L -c %a /proc/self/fd/1 > "{seen}"\nexec "{real}" "$@"\n')
    key = tmp_path / "secret_key"
    result = subprocess.run(
        ["bash", "-c", f'umask 022; . {LIB}; ensure_secret_key "$1"', "lib", str(key)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stderr
    assert seen.read_text().strip() == "600"
    assert len(key.read_text().strip()) >= 50


def test_without_a_configured_key_the_installation_makes_its_own_and_uses_it(tmp_path):
    env = {"KMSDASH_SECRET_KEY": "", "KMSDASH_SECRET_KEY_FILE": ""}
    first = lib('use_own_secret_key "$1" && echo "$KMSDASH_SECRET_KEY_FILE"', str(tmp_path), env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(tmp_path / "secret_key")
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    value = (tmp_path / "secret_key").read_text()
    again = lib('use_own_secret_key "$1" && echo "$KMSDASH_SECRET_KEY_FILE"', str(tmp_path), env=env)
    assert again.stdout.strip() == str(tmp_path / "secret_key") and (tmp_path / "secret_key").read_text() == value


@pytest.mark.parametrize("configured", ["KMSDASH_SECRET_KEY", "KMSDASH_SECRET_KEY_FILE"])
def test_a_configured_key_is_left_alone(tmp_path, configured):
    env = {"KMSDASH_SECRET_KEY": "", "KMSDASH_SECRET_KEY_FILE": "", configured: "set-by-the-operator"}
    result = lib('use_own_secret_key "$1" && echo "${KMSDASH_SECRET_KEY_FILE:-}"', str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "secret_key").exists()
    assert result.stdout.strip() == ("set-by-the-operator" if configured == "KMSDASH_SECRET_KEY_FILE" else "")


def test_make_run_uses_the_installations_own_key_before_it_starts_anything():
    # scripts/run.sh itself needs AWS or the emulator: what it does with the key is the function above.
    script = (ROOT / "scripts/run.sh").read_text()
    call = script.index('use_own_secret_key "$KMSDASH_VAR_DIR"')
    assert call < script.index("manage.py migrate") and call < script.index("start web gunicorn")
    # Before anything the script creates, so that nothing it writes is ever readable by others.
    assert script.index("umask 077") < min(script.index(". scripts/lib.sh"), script.index("mkdir"))


@pytest.mark.slow
def test_the_first_admin_password_is_printed_once_when_it_is_made_and_stored_nowhere(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "KMSDASH_VAR_DIR": str(tmp_path / "var"),
        "VIRTUAL_ENV": "",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    assert lib("python manage.py migrate -v0", env=env).returncode == 0
    first = lib("create_first_admin", env=env)
    assert first.returncode == 0, first.stderr
    (line,) = first.stdout.splitlines()
    username, password = line.split()[:2]
    assert username == "admin" and len(password) >= 12 and "shown only now" in line
    check = (
        "from django.contrib.auth import get_user_model; import sys; u = get_user_model().objects.get(username='admin'); "
        f"sys.exit(not (u.check_password('{password}') and u.groups.filter(name='admin').exists()))"
    )
    assert lib(f'python manage.py shell -v 0 -c "{check}"', env=env).returncode == 0
    # A later start: nothing printed, the password unchanged, and no file of the installation holds it.
    again = lib("create_first_admin", env=env)
    assert again.returncode == 0 and again.stdout == ""
    assert lib(f'python manage.py shell -v 0 -c "{check}"', env=env).returncode == 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_make_run_prints_the_first_admin_password_only_from_create_first_admin():
    script = (ROOT / "scripts/run.sh").read_text()
    assert "first_login=$(create_first_admin)" in script
    assert "create_user admin" not in script.replace("change it: python manage.py create_user admin", "")
