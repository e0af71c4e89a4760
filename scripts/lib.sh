# Shared by run.sh and test.sh: the virtual environment, installed once per requirements.txt, on an
# interpreter without the cookie-parsing flaw of CVE-2024-7592.
# shellcheck shell=bash

VENV=${VENV:-.venv}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# CVE-2024-7592: http.cookies, which Django uses on every request's Cookie header, took time
# quadratic in the backslashes of a quoted value: one unauthenticated request with a 60 KB cookie
# costs about 10 s of CPU. Fixed in CPython 3.11.10, 3.12.6 and 3.13.0, and by Debian in its 3.11.2
# packages (distributions backport, so the parse is timed rather than the version trusted).
# 20,000 backslashes take 2-3 s when quadratic and under 10 ms when fixed; 0.5 s sits between with
# room on both sides, and a timer stops a slow parse there, so refusing costs at most 1.5 s (three
# tries, in case a busy machine stalls one).
PYTHON_CHECK='
import sys
if sys.version_info < (3, 11):
    print("is Python %d.%d; kmsdash needs 3.11 or newer" % sys.version_info[:2])
    sys.exit(1)
if "base" in sys.argv[1:]:
    try:
        import ensurepip, venv
    except ImportError:
        print("cannot create virtual environments (on Debian/Ubuntu: apt-get install python3-venv)")
        sys.exit(1)
import http.cookies, signal
LIMIT = 0.5
def too_slow(signum, frame):
    raise TimeoutError
signal.signal(signal.SIGALRM, too_slow)
cookie = "c=\"" + "\\" * 20000 + "\""
for attempt in range(3):
    try:
        signal.setitimer(signal.ITIMER_REAL, LIMIT)
        http.cookies.SimpleCookie(cookie)
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.exit(0)
    except TimeoutError:
        pass
print("has the quadratic cookie parser of CVE-2024-7592 (a 20,000-backslash cookie took over %.1f s): "
      "use a Python with the fix (3.11.10+, 3.12.6+, 3.13+, or Debian'"'"'s python3)" % LIMIT)
sys.exit(1)
'

# python_problem PYTHON [base]: nothing and success when PYTHON will do, else why not and failure.
# "base": PYTHON is to create the virtual environment, so it also needs the venv module.
python_problem() {
    local out
    out=$("$1" -c "$PYTHON_CHECK" "${@:2}" 2>&1) && return 0
    echo "${out:-does not run}"
    return 1
}

# The interpreter to build the virtual environment on: KMSDASH_PYTHON if set (refused if it fails
# the check), else the system's /usr/bin/python3 (distributions patch it; pyenv's or a manual build
# earlier on PATH may be an old point release), else python3 on PATH.
PYTHON_CANDIDATES=(/usr/bin/python3 python3)
pick_python() {
    local candidate reason reasons=""
    if [ -n "${KMSDASH_PYTHON:-}" ]; then
        command -v "$KMSDASH_PYTHON" >/dev/null || die "KMSDASH_PYTHON=$KMSDASH_PYTHON not found"
        reason=$(python_problem "$KMSDASH_PYTHON" base) || die "KMSDASH_PYTHON=$KMSDASH_PYTHON $reason"
        echo "$KMSDASH_PYTHON"
        return
    fi
    for candidate in "${PYTHON_CANDIDATES[@]}"; do
        command -v "$candidate" >/dev/null || continue
        if reason=$(python_problem "$candidate" base); then
            echo "$candidate"
            return
        fi
        reasons+=$'\n'"  $(command -v "$candidate") $reason"
    done
    die "no usable Python 3.11+ found:${reasons:- none installed}"$'\n'"  install one, or set KMSDASH_PYTHON"
}

ensure_venv() {
    local reason python
    if [ -x "$VENV/bin/python" ] && ! reason=$(python_problem "$VENV/bin/python"); then
        # Built by an earlier version of this script on pyenv's or another unpatched python3.
        [ -f "$VENV/.requirements.sha256" ] \
            || die "the virtual environment $VENV $reason; remove it or set VENV to another one"
        say "The virtual environment $VENV $reason"
        say "Rebuilding $VENV"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        python=$(pick_python) || exit 1
        say "Creating the virtual environment in $VENV ($python, $("$python" -V 2>&1))"
        "$python" -m venv "$VENV" || die "$python -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    # Reinstall only when requirements.txt changed since the last successful install.
    local wanted stamp="$VENV/.requirements.sha256"
    wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        say "Installing requirements.txt"
        # No browser download: the browser tests use the system's chromium.
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
            -r requirements.txt || die "installing requirements.txt failed"
        echo "$wanted" > "$stamp"
    fi
    # VENV may be relative to the project or absolute.
    VIRTUAL_ENV=$(cd "$VENV" && pwd)
    export VIRTUAL_ENV PATH="$VIRTUAL_ENV/bin:$PATH"
}

# ensure_secret_key FILE: a random key in FILE, made once and readable by this user only. The umask
# is set before the file exists, so the key is never readable to others, not even for a moment.
ensure_secret_key() {
    local file=$1
    if [ ! -s "$file" ]; then
        say "Generating a secret key in $file"
        (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(50))' > "$file.new") \
            || die "could not write $file"
        mv "$file.new" "$file"
    fi
    chmod 600 "$file"
}

# create_first_admin: on an installation without any user yet, an admin with a random password,
# and its login line on stdout, once: the password is stored nowhere but as its hash, and a later
# start (a user exists) prints nothing. Uses the project's python and manage.py.
create_first_admin() {
    if python manage.py shell -v 0 -c 'from django.contrib.auth import get_user_model as m; import sys; sys.exit(not m().objects.exists())'; then
        return 0
    fi
    local password
    password=$(python -c 'import secrets; print(secrets.token_urlsafe(12))')
    KMSDASH_ADMIN_PASSWORD=$password python manage.py create_user admin --role=admin --password-env=KMSDASH_ADMIN_PASSWORD >&2 \
        || die "could not create the first admin"
    printf '  %-8s %-18s roles: admin (shown only now; change it: python manage.py create_user admin --role=admin)\n' \
        admin "$password"
}

# use_own_secret_key DIR: unless a key is configured (KMSDASH_SECRET_KEY or KMSDASH_SECRET_KEY_FILE),
# this installation's own, DIR/secret_key, made on first start and kept (`make run` calls it, so
# that gunicorn, which refuses the public development key, starts without any configuration).
use_own_secret_key() {
    if [ -z "${KMSDASH_SECRET_KEY:-}${KMSDASH_SECRET_KEY_FILE:-}" ]; then
        ensure_secret_key "$1/secret_key"
        export KMSDASH_SECRET_KEY_FILE="$1/secret_key"
    fi
}
