"""Load on the analysts' pages: 50 logged-in users for 60 seconds against gunicorn, with locust.

    python bench/load_bench.py --events 1000000 --users 50 --seconds 60

Loads synthetic events through the real ingestion path (bench/loading.py) into a dedicated
PostgreSQL database (created if missing, reused if already loaded), makes an analyst and a session
for it with Django's session engine, collects the static files, starts gunicorn with the project's
gunicorn.conf.py on a free port of 127.0.0.1, and runs bench/locustfile.py headless against it
(loopback only, bounded by --seconds). Prints p50, p95, p99 per page and overall, the error rate,
and the load average sampled during the run (the figures mean little on a busy machine).

The database URL defaults to the local server; set KMSDASH_BENCH_DATABASE_URL to use another.
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loading import ensure_database, load  # noqa: E402

TARGET_P95_MS = 500


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_for_analyst() -> str:
    """A logged-in session of the analyst `bench-load`, stored by the configured session engine."""
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.test import Client

    user, _ = User.objects.get_or_create(username="bench-load")
    user.groups.add(Group.objects.get_or_create(name="analyst")[0])
    client = Client()
    client.force_login(user)  # django.contrib.auth.login through the session engine
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def samples() -> dict[str, str]:
    from django.urls import reverse

    from audits import selectors
    from audits.filters import EventFilter

    top = selectors.overview(EventFilter(), top=1).top_keys[0]
    principal = selectors.key_principals(EventFilter(key=top["key"]), limit=1)[0]["principal"]
    return {
        "KMSDASH_LOAD_KEY": top["key"],
        "KMSDASH_LOAD_KEY_URL": reverse("audits:key_detail", args=[top["key"]]),
        "KMSDASH_LOAD_PRINCIPAL": principal,
    }


def wait_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"gunicorn did not answer at {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)), help="loading processes")
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()

    url = os.environ.get("KMSDASH_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kmsdash_load_bench")
    ensure_database(url)
    work = Path(tempfile.mkdtemp(prefix="kmsdash-load-"))
    # The server and this script share one secret key (the session is signed with it) and one database.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KMSDASH_", "DJANGO_"))},
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "kmsdash.settings",
        "KMSDASH_SECRET_KEY": secrets.token_urlsafe(50),
        "KMSDASH_STATIC_ROOT": str(work / "static"),
        "KMSDASH_VAR_DIR": str(work / "var"),
        "KMSDASH_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    if not args.skip_load:
        load(args.events, args.workers)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audits_event")
        events = cursor.fetchone()[0]
    call_command("collectstatic", interactive=False, verbosity=0)
    env.update(samples(), KMSDASH_LOAD_SESSION=session_for_analyst())
    connection.close()

    port = free_port()
    host = f"http://127.0.0.1:{port}"
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "kmsdash.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=(work / "web.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    loads: list[float] = []
    stop = threading.Event()

    def sample_load() -> None:
        while not stop.wait(5):
            loads.append(os.getloadavg()[0])

    try:
        wait_up(f"{host}/accounts/login/")
        print(f"\n{events:,} events; {args.users} users for {args.seconds} s against gunicorn at {host}")
        print(f"load average before the run: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores\n")
        sampler = threading.Thread(target=sample_load, daemon=True)
        sampler.start()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(ROOT / "bench" / "locustfile.py"),
                "--headless",
                "--users",
                str(args.users),
                "--spawn-rate",
                str(args.users),
                "--run-time",
                f"{args.seconds}s",
                "--stop-timeout",
                "10",
                "--host",
                host,
                "--csv",
                str(work / "load"),
                "--only-summary",
                "--loglevel",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=(work / "locust.log").open("w"),
            timeout=args.seconds + 60,
        )
    finally:
        stop.set()
        web.terminate()
        web.wait(timeout=30)

    print(f"{'page':34} {'requests':>8} {'errors':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    overall = None
    with (work / "load_stats.csv").open() as f:
        for row in csv.DictReader(f):
            line = (
                f"{row['Name']:34} {row['Request Count']:>8} {row['Failure Count']:>6} "
                f"{row['50%']:>7} {row['95%']:>7} {row['99%']:>7}"
            )
            print(line)
            if row["Name"] == "Aggregated":
                overall = row
    assert overall is not None
    requests, failures = int(overall["Request Count"]), int(overall["Failure Count"])
    p95 = float(overall["95%"])
    rate = failures / requests if requests else 1.0
    print(f"\n{requests:,} requests ({float(overall['Requests/s']):.1f}/s), error rate {rate:.2%}")
    print(f"p50 {overall['50%']} ms, p95 {overall['95%']} ms, p99 {overall['99%']} ms")
    verdict = "ok" if p95 <= TARGET_P95_MS and failures == 0 else "MISSED"
    print(f"target p95 <= {TARGET_P95_MS} ms and no errors: {verdict}")
    if loads:
        print(
            f"load average (1 min) during the run: min {min(loads):.2f}, max {max(loads):.2f}, {os.cpu_count()} cores"
        )
    print(f"server log: {work / 'web.log'}")


if __name__ == "__main__":
    main()
