#!/usr/bin/env bash
# `make run`: kmsdash on http://127.0.0.1:8000 with its Celery worker and beat.
#
# Without AWS credentials (a fresh machine) it runs the demo: a local AWS emulator seeded with a
# month of synthetic KMS activity, which the real ingestion tasks then read over HTTP. With AWS
# credentials (or KMSDASH_DEMO=False, or Sources already registered) it watches real AWS instead.
# Ctrl-C stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# Everything this script and its processes create (the database, logs, the secret key, the demo
# logins) is private to this user from the moment it exists, not after a chmod.
umask 077
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# Local settings (see .env.example); the environment given on the command line wins.
if [ -f .env ]; then
    while IFS= read -r line; do
        case "$line" in '' | '#'*) continue ;; esac
        name=${line%%=*}
        [[ $line == *=* && $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die ".env: not NAME=value: $line"
        if [ -z "${!name+set}" ]; then export "$line"; fi
    done < .env
fi

PORT=${KMSDASH_PORT:-8000}
EMULATOR_PORT=${KMSDASH_EMULATOR_PORT:-5055}
HOST=127.0.0.1

ensure_venv

port_free() {
    python -c 'import socket, sys; s = socket.socket(); sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0)' \
        "$HOST" "$1"
}

aws_credentials_work() {
    # Outside the emulator: the standard chain (env, profile, SSO, instance role), checked with STS.
    env -u AWS_ENDPOINT_URL python - <<'PY' 2>/dev/null
import os, sys
import boto3
from botocore.config import Config
session = boto3.Session()
if session.get_credentials() is None:
    sys.exit(1)
config = Config(connect_timeout=3, read_timeout=5, retries={"total_max_attempts": 1})
session.client("sts", region_name=session.region_name or "us-east-1", config=config).get_caller_identity()
PY
}

sources_registered() {
    python - <<'PY' 2>/dev/null
import os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")
django.setup()
from audits.models import Source
sys.exit(0 if Source.objects.exists() else 1)
PY
}

if [ -z "${KMSDASH_DEMO:-}" ]; then
    if aws_credentials_work; then
        say "AWS credentials found: watching real AWS (set KMSDASH_DEMO=True for the demo)"
        KMSDASH_DEMO=False
    elif sources_registered; then
        say "Sources are registered: watching real AWS (set KMSDASH_DEMO=True for the demo)"
        KMSDASH_DEMO=False
    else
        say "No AWS credentials: running the demo on synthetic data"
        KMSDASH_DEMO=True
    fi
fi
case "$KMSDASH_DEMO" in
    True | true | 1) KMSDASH_DEMO=True ;;
    *) KMSDASH_DEMO=False ;;
esac
export KMSDASH_DEMO

for port in "$PORT" $([ "$KMSDASH_DEMO" = True ] && echo "$EMULATOR_PORT"); do
    port_free "$port" || die "port $port on $HOST is already in use (set KMSDASH_PORT / KMSDASH_EMULATOR_PORT)"
done

if [ "$KMSDASH_DEMO" = True ]; then
    # The demo world is rebuilt at every start, in its own directory and database, so it never
    # mixes with a real installation's data and never reaches real AWS.
    export KMSDASH_VAR_DIR="$PWD/var/demo"
    rm -rf "$KMSDASH_VAR_DIR"
    export DATABASE_URL="sqlite:///$KMSDASH_VAR_DIR/db.sqlite3"
    export AWS_ENDPOINT_URL="http://$HOST:$EMULATOR_PORT"
    export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_DEFAULT_REGION=us-east-1
    unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE
    export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
    # The first passes read the whole seeded month from S3, and two days of LookupEvents.
    export KMSDASH_S3_INITIAL_DAYS=${KMSDASH_S3_INITIAL_DAYS:-31}
    export KMSDASH_LOOKUP_INITIAL_DAYS=${KMSDASH_LOOKUP_INITIAL_DAYS:-2}
    # Fewer, longer LookupEvents windows for that first catch-up: it is paced at 2 requests/s.
    export KMSDASH_LOOKUP_MAX_WINDOW_MINUTES=${KMSDASH_LOOKUP_MAX_WINDOW_MINUTES:-720}
    # Alert channel secrets are sealed with a key in the emulator's KMS (seed_demo creates it).
    export KMSDASH_SECRETS_KMS_KEY=${KMSDASH_SECRETS_KMS_KEY:-alias/kmsdash-channel-secrets}
    # A low symmetric quota for prod's eu-west-1, so the capacity page shows a region near it
    # (demo/activity.py DEMO_QUOTAS, CAPACITY_BURST).
    export KMSDASH_KMS_QUOTAS=${KMSDASH_KMS_QUOTAS:-'{"111122223333:eu-west-1:symmetric": 10}'}
    # "Safe to delete?" looks back 90 days by default, and only over CloudTrail data kmsdash holds:
    # the demo holds a month, so its window is 28 days (else no key could be safe to schedule).
    export KMSDASH_RETIREMENT_WINDOW_DAYS=${KMSDASH_RETIREMENT_WINDOW_DAYS:-28}
else
    export KMSDASH_VAR_DIR=${KMSDASH_VAR_DIR:-$PWD/var}
fi
LOGS="$KMSDASH_VAR_DIR/log"
mkdir -p "$LOGS" "$KMSDASH_VAR_DIR/broker" "$KMSDASH_VAR_DIR/broker-processed"
# Also when an earlier version left it readable to others.
chmod 700 "$KMSDASH_VAR_DIR"

# Sessions and CSRF tokens are signed with the secret key: unless one is configured, this
# installation's own, made on first start and kept in var/ (the demo makes a new one each time).
use_own_secret_key "$KMSDASH_VAR_DIR"

# --- process supervision: each child in its own process group, all stopped together ----------
set -m
PIDS=()
stop_all() {
    trap - EXIT INT TERM
    if [ ${#PIDS[@]} -gt 0 ]; then
        say "Stopping"
        # The leaders first (Celery's worker then stops its own pool cleanly), then whatever is left.
        for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for _ in $(seq 50); do
            alive=0
            for pid in "${PIDS[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
            [ $alive = 0 ] && break
            sleep 0.2
        done
        for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

start() {  # start NAME COMMAND...: in the background, output to var/.../log/NAME.log
    local name=$1; shift
    "$@" >"$LOGS/$name.log" 2>&1 &
    PIDS+=("$!")
}

# --- the AWS side -------------------------------------------------------------------------------
if [ "$KMSDASH_DEMO" = True ]; then
    say "Starting the AWS emulator on $AWS_ENDPOINT_URL"
    start emulator python -m emulator.server --host "$HOST" --port "$EMULATOR_PORT"
    python scripts/wait_for.py "$AWS_ENDPOINT_URL/_kmsdash/requests" --timeout 60 \
        || die "the emulator did not start; see $LOGS/emulator.log"
fi

say "Migrating the database"
python manage.py migrate --no-input -v0
say "Collecting static files (content-hashed names, compressed copies)"
python manage.py collectstatic --no-input -v0

if [ "$KMSDASH_DEMO" = True ]; then
    say "Seeding the emulator with a month of synthetic KMS activity"
    python manage.py seed_demo --endpoint "$AWS_ENDPOINT_URL" --credentials-file "$KMSDASH_VAR_DIR/credentials.txt"
else
    # Earlier versions kept the first admin password here in clear text.
    rm -f "$KMSDASH_VAR_DIR/credentials.txt"
    first_login=$(create_first_admin)
fi

# --- first ingestion, in the foreground, so the first page already has data -----------------
if [ "$KMSDASH_DEMO" = True ]; then
    for command in ingest_cloudtrail ingest_keys ingest_iam analyse_access ingest_costs evaluate_alerts; do
        say "First ingestion: $command"
        python manage.py "$command" || say "$command failed; the scheduled runs will try again"
    done
fi

say "Starting the Celery worker and beat (logs in $LOGS)"
start worker celery -A kmsdash worker --loglevel INFO
start beat celery -A kmsdash beat --loglevel INFO --schedule "$KMSDASH_VAR_DIR/celerybeat-schedule"
if [ "$KMSDASH_DEMO" = True ]; then
    # New synthetic activity every minute, which the scheduled tasks pick up every 5 minutes.
    start live python manage.py demo_live --endpoint "$AWS_ENDPOINT_URL"
else
    # Real AWS: don't wait for the schedule, queue one pass of every source now.
    for task in inventory.tasks.schedule_inventory access.tasks.schedule_iam audits.tasks.schedule_lookup audits.tasks.schedule_s3 \
                costs.tasks.ingest_costs; do
        celery -A kmsdash call "$task" >/dev/null || say "could not queue $task"
    done
fi

say "Starting the web server (gunicorn)"
# The production server in both modes: gunicorn.conf.py (workers, threads, request limits), DEBUG
# off, static files from whitenoise.
start web gunicorn -c gunicorn.conf.py --bind "$HOST:$PORT" kmsdash.wsgi
python scripts/wait_for.py "http://$HOST:$PORT/accounts/login/" --timeout 60 \
    || die "the web server did not start; see $LOGS/web.log"

echo
if [ "$KMSDASH_DEMO" = True ]; then
    echo "  kmsdash demo: every event, key and cost is SYNTHETIC, served by a local AWS emulator."
else
    echo "  kmsdash is watching real AWS."
fi
echo "  Open http://$HOST:$PORT/"
if [ "$KMSDASH_DEMO" = True ] && [ -s "$KMSDASH_VAR_DIR/credentials.txt" ]; then
    echo "  Log in with:"
    cat "$KMSDASH_VAR_DIR/credentials.txt"
elif [ -n "${first_login:-}" ]; then
    echo "  Log in with:"
    echo "$first_login"
    unset first_login
fi
echo "  Logs: $LOGS/  Stop: Ctrl-C"
echo

# Stop everything as soon as any one of them dies.
set +e
wait -n "${PIDS[@]}"
status=$?
say "A process exited (status $status); see $LOGS/"
exit "$status"
