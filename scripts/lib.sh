# Shared by run.sh and test.sh: the virtual environment, installed once per requirements.txt.
# shellcheck shell=bash

KMSDASH_PYTHON=${KMSDASH_PYTHON:-python3}
VENV=${VENV:-.venv}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        command -v "$KMSDASH_PYTHON" >/dev/null || die "$KMSDASH_PYTHON not found: install Python 3.11 or newer"
        "$KMSDASH_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || die "kmsdash needs Python 3.11 or newer ($KMSDASH_PYTHON is $("$KMSDASH_PYTHON" -V 2>&1))"
        say "Creating the virtual environment in $VENV"
        "$KMSDASH_PYTHON" -m venv "$VENV" || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
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
    export PATH="$PWD/$VENV/bin:$PATH"
    export VIRTUAL_ENV="$PWD/$VENV"
}
