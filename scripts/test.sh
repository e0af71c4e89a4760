#!/usr/bin/env bash
# `make test`: the whole test suite. Installs like `make run` (the virtual environment and
# requirements.txt, including playwright's python package; the browser tests drive the system's
# chromium, so no browser is downloaded). Honours DATABASE_URL (default: SQLite).
# Extra arguments go to pytest, e.g. `scripts/test.sh -k demo -x`.
# In parallel: one pytest-xdist worker per core (KMSDASH_TEST_WORKERS, default auto; 0 runs in this
# process), each test file on one worker (--dist loadfile: a module's fixtures are set up once).
# A later `-n N` or `--dist` among the arguments wins.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_venv
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
# The suite must never reach real AWS or pick up a developer's settings.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL KMSDASH_DEMO
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true

# The single sign-on tests run a real OpenID provider (node-oidc-provider); without node they skip.
if command -v npm >/dev/null && [ ! tests/oidc_provider/node_modules/.package-lock.json -nt tests/oidc_provider/package-lock.json ]; then
    say "Installing the test OpenID provider (npm ci)"
    (cd tests/oidc_provider && npm ci --no-audit --no-fund --loglevel=error)
fi

say "Running the test suite on ${DATABASE_URL:-SQLite}"
exec python -m pytest -p no:cacheprovider -n "${KMSDASH_TEST_WORKERS:-auto}" --dist loadfile "$@"
