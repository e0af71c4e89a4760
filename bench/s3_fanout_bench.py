"""S3 ingestion over several Celery worker processes: the same trail objects read by 1, 2 and 4 workers.

    python bench/s3_fanout_bench.py [--events N] [--per-file N] [--latency-ms MS] [--workers 1,2,4,1]
                                    [--database-url postgres://...] [--broker redis://127.0.0.1:6379/N]

Generates N synthetic KMS events (audits.synthetic, 2 accounts x 3 regions, 3 days) as trail log
files of `per-file` records (bench/s3_bench.py's layout), uploads them once to the AWS emulator (moto
in server mode, in its own process; each GetObject of a log file answered after --latency-ms, as
real S3 takes tens of milliseconds to a first byte). Then, for each worker count, in a fresh
PostgreSQL database: that many `celery worker --pool=prefork -c 1` processes on a Redis broker, one
`schedule_s3` (one ingest_s3_task per scope, each fanning its objects out to read_s3_claims_task),
timed from the message to the last of the 6 passes closed. The 1-worker row is the baseline of the
run; `--workers 1,2,4,1` measures it again at the end, as the machine is shared.

Where the time goes: CPU seconds of the worker processes, of the PostgreSQL backends of the bench's
database (sampled every 0.1 s), of every PostgreSQL process on the machine (other databases' work
included), of the emulator, and the machine's busy share over the timed
interval. For reference, the same pass read in one process without a broker (bench/s3_bench.py's child).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")

from bench.ingest_bench import recreate_pg_database  # noqa: E402
from bench.s3_bench import AWS_ENV, BUCKET, DAYS, log_files, start_emulator, upload  # noqa: E402

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kmsdash_s3_fanout_bench"
ACCOUNTS = ("111122223333", "444455556666")
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")


def control(url: str, path: str, payload=None):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"{url}/_kmsdash/{path}", data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def manage(env: dict, *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True)


def cpu_seconds(processes) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except Exception:  # gone
            pass
    return total


def worker_processes(pids: list[int]):
    import psutil

    found = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            found += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return found


def postgres_cpu() -> float:
    import psutil

    return cpu_seconds(p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres")


class BackendCPU:
    """CPU of the PostgreSQL backends serving one database: sampled (their process title names the
    database), each backend's last sample kept, as a backend exits when its worker closes its connection."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.seen: dict[int, float] = {}
        self.start: dict[int, float] = {}

    def sample(self) -> None:
        import psutil

        for process in psutil.process_iter(["name", "cmdline"]):
            try:
                if process.info["name"] != "postgres" or f" {self.database} " not in " ".join(
                    process.info["cmdline"] or ()
                ):
                    continue
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            self.start.setdefault(process.pid, times.user + times.system if not self.seen else 0.0)
            self.seen[process.pid] = times.user + times.system

    def total(self) -> float:
        return sum(cpu - self.start.get(pid, 0.0) for pid, cpu in self.seen.items())


def one_round(workers: int, args, env: dict, url: str, objects: int, emulator_pid: int) -> dict:
    import psutil
    import psycopg
    import redis
    from celery import Celery

    recreate_pg_database(args.database_url)
    manage(env, "migrate", "--no-input")
    for account in ACCOUNTS:
        regions = ",".join(REGIONS)
        manage(env, "add_source", "--account-id", account, "--regions", regions, "--s3-bucket", BUCKET, "--no-lookup")
    redis.Redis.from_url(args.broker).flushdb()
    control(url, "reset", {})
    if args.latency_ms:
        control(url, "faults", {"target": ".json.gz", "error": "", "delay": args.latency_ms / 1000, "count": 10**9})
    logs = Path(env["KMSDASH_VAR_DIR"])
    logs.mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "kmsdash",
                "worker",
                "--pool=prefork",
                "-c",
                "1",
                "-n",
                f"bench{n}@kmsdash",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=(logs / f"worker{n}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for n in range(workers)
    ]
    app = Celery("kmsdash-bench", broker=args.broker)
    try:
        deadline = time.monotonic() + 120
        while len(app.control.ping(timeout=1)) < workers:
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not start")
        processes = worker_processes([p.pid for p in procs])
        load_before = os.getloadavg()
        emulator = [psutil.Process(emulator_pid)]
        cpu_before, pg_before, machine_before = cpu_seconds(processes), postgres_cpu(), psutil.cpu_times()
        emulator_before = cpu_seconds(emulator)
        backends = BackendCPU(args.database_url.rsplit("/", 1)[1])
        backends.sample()  # the backends alive before the pass count from here
        started = time.perf_counter()
        app.send_task("audits.tasks.schedule_s3")
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            while True:
                rows = conn.execute("SELECT status FROM audits_ingestrun WHERE kind = 's3'").fetchall()
                if len(rows) == len(ACCOUNTS) * len(REGIONS) and all(row[0] != "running" for row in rows):
                    break
                if time.perf_counter() - started > args.timeout:
                    raise SystemExit(f"timed out: {rows}")
                backends.sample()
                time.sleep(0.1)
            elapsed = time.perf_counter() - started
            (events,) = conn.execute("SELECT count(*) FROM audits_event").fetchall()[0]
            statuses = sorted({row[0] for row in rows})
        processes = worker_processes([p.pid for p in procs])  # prefork children live on
        cpu, pg = cpu_seconds(processes) - cpu_before, postgres_cpu() - pg_before
        emulator_cpu = cpu_seconds(emulator) - emulator_before
        machine_after = psutil.cpu_times()
        busy = sum(getattr(machine_after, f) - getattr(machine_before, f) for f in ("user", "system", "nice"))
        wall = sum(machine_after) - sum(machine_before)
        gets = [
            r
            for r in control(url, "requests")
            if r["target"].startswith(f"s3:GET /{BUCKET}/") and ".json.gz" in r["target"]
        ]
        keys = {r["target"].split("?")[0] for r in gets}
    finally:
        for process in procs:
            process.terminate()
        for process in procs:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
    assert statuses == ["succeeded"], statuses
    assert len(gets) == len(keys) == objects, (len(gets), len(keys), objects)  # each object fetched once
    return {
        "workers": workers,
        "seconds": elapsed,
        "events": events,
        "worker_cpu": cpu,
        "pg_cpu": pg,
        "db_cpu": backends.total(),
        "emulator_cpu": emulator_cpu,
        "busy": busy / wall if wall else 0.0,
        "load": load_before,
    }


def in_one_process(args, env: dict, start: datetime) -> dict:
    """The same pass read in one process (bench/s3_bench.py's child), timed inside it."""
    recreate_pg_database(args.database_url)
    control(env["AWS_ENDPOINT_URL"], "reset", {})
    if args.latency_ms:
        control(
            env["AWS_ENDPOINT_URL"],
            "faults",
            {"target": ".json.gz", "error": "", "delay": args.latency_ms / 1000, "count": 10**9},
        )
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "s3_bench.py"), "--child", "s3", start.isoformat()],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--per-file", type=int, default=500)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--workers", default="1,2,4,1")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG))
    parser.add_argument("--broker", default=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    start = datetime.combine(datetime.now(UTC).date() - timedelta(days=DAYS - 1), datetime.min.time(), tzinfo=UTC)
    files = log_files(args.events, args.per_file, start)
    emulator, url = start_emulator()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"kmsdash-s3-fanout-bench-{os.getpid()}"
    try:
        upload(url, files)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("KMSDASH_", "DJANGO_"))},
            **AWS_ENV,
            "AWS_ENDPOINT_URL": url,
            "DJANGO_SETTINGS_MODULE": "kmsdash.settings",
            "DATABASE_URL": args.database_url,
            "CELERY_BROKER_URL": args.broker,
            "KMSDASH_VAR_DIR": str(workdir),
            "KMSDASH_S3_INITIAL_DAYS": str(DAYS),
            "KMSDASH_LOG_LEVEL": "WARNING",
        }
        size = sum(len(body) for _, body in files)
        print(
            f"{args.events} events in {len(files)} objects of {args.per_file} records ({size / len(files) / 1024:.0f} "
            f"KiB each), {DAYS} days, 2 accounts x 3 regions; {args.latency_ms:.0f} ms to each GetObject's answer; "
            f"{os.cpu_count()} cores"
        )
        serial = in_one_process(args, env, start)
        results = [one_round(int(n), args, env, url, len(files), emulator.pid) for n in args.workers.split(",")]
        recreate_pg_database(args.database_url, drop_only=True)
    finally:
        emulator.terminate()
        emulator.wait()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)

    base = next(r for r in results if r["workers"] == 1)
    base_rate = base["events"] / base["seconds"]
    print(
        f"in one process (ingest_cloudtrail --source s3, no broker): {serial['seconds']:.1f} s, "
        f"{serial['new'] / serial['seconds']:,.0f} events/s, CPU {serial['cpu']:.1f} s"
    )
    print(
        "workers  seconds  events/s  speedup  worker CPU s  its PostgreSQL CPU s  all PostgreSQL CPU s"
        "  emulator CPU s  machine busy  load before"
    )
    for r in results:
        rate = r["events"] / r["seconds"]
        print(
            f"{r['workers']:>7}  {r['seconds']:>7.1f}  {rate:>8,.0f}  {rate / base_rate:>7.2f}  {r['worker_cpu']:>12.1f}"
            f"  {r['db_cpu']:>20.1f}  {r['pg_cpu']:>20.1f}  {r['emulator_cpu']:>14.1f}  {r['busy']:>12.0%}  "
            + " ".join(f"{x:.2f}" for x in r["load"])
        )
    print(
        f"speedup: against the first 1-worker row; load average now {' '.join(open('/proc/loadavg').read().split()[:3])}"
    )


if __name__ == "__main__":
    main()
