#!/usr/bin/env bash
# `make check`: the quality gate, run by CI before `make test`. Stops at the first step that fails
# and prints each step's time:
#   1. ruff lint                       (pyproject.toml [tool.ruff.lint])
#   2. ruff format --check             (skipped with KMSDASH_CHECK_SKIP_FORMAT=1)
#   3. mypy with django-stubs          (pyproject.toml [tool.mypy])
#   4. makemigrations --check          (every model change has its migration)
#   5. check --deploy                  (production-like settings, warnings fail too)
#   6. the fast tests                  (all but the emulator, Celery end-to-end, browser and slow tests)
#                                      on SQLite, in two pytest-xdist workers
# Extra arguments go to pytest in step 6, e.g. `scripts/check.sh -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_venv
# Like scripts/test.sh: nothing here may reach real AWS or pick up a developer's settings.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL KMSDASH_DEMO KMSDASH_DEBUG
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true

step() {  # step NAME COMMAND...: run it, say how long it took, stop the gate if it failed
    local name=$1 start=$SECONDS
    shift
    say "$name"
    if ! "$@"; then
        die "make check: '$name' failed after $((SECONDS - start)) s"
    fi
    printf '    %s: %d s\n' "$name" $((SECONDS - start)) >&2
}

# The settings a production deployment must set (README, "Configuration"); nothing is contacted:
# the deploy checks read settings only. A fresh random key, so kmsdash.E001 and security.W009 pass
# only for a real one.
deploy_check() {
    env -u KMSDASH_SECRET_KEY_FILE -u KMSDASH_BEHIND_TLS_PROXY \
        KMSDASH_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
        KMSDASH_HTTPS=True \
        KMSDASH_ALLOWED_HOSTS=kmsdash.example.org \
        DATABASE_URL=postgres://kmsdash@db.example.org:5432/kmsdash \
        CELERY_BROKER_URL=redis://redis.example.org:6379/0 \
        python manage.py check --deploy --fail-level WARNING
}

total=$SECONDS
step "ruff check" ruff check .
# While several branches are worked on at once the tree is formatted only after they are merged
# (one `ruff format .`), so a branch can run the gate with KMSDASH_CHECK_SKIP_FORMAT=1 until then.
if [ "${KMSDASH_CHECK_SKIP_FORMAT:-}" = 1 ]; then
    say "ruff format --check: skipped (KMSDASH_CHECK_SKIP_FORMAT=1)"
else
    step "ruff format --check" ruff format --check .
fi
step "mypy" mypy .
# Against an empty in-memory database: the check is about the code, and needs no server.
step "makemigrations --check" env DATABASE_URL=sqlite:///:memory: python manage.py makemigrations --check --dry-run
step "check --deploy" deploy_check
# On SQLite in memory (KMSDASH_CHECK_DATABASE_URL to change it) and two workers: the gate has to
# stay under two minutes on a 2-core machine. `make test` runs every test on DATABASE_URL.
step "fast tests" env DATABASE_URL="${KMSDASH_CHECK_DATABASE_URL:-sqlite:///:memory:}" \
    python -m pytest -p no:cacheprovider -q -m "not emulator and not e2e and not browser and not slow" \
    -n "${KMSDASH_CHECK_WORKERS:-2}" --dist loadfile "$@"
say "make check passed in $((SECONDS - total)) s"
