"""S3 ingestion benchmark: `ingest_cloudtrail --source s3` over real HTTP, against the same files imported
from local disk in the same run.

    python bench/s3_bench.py [--events N] [--per-file N] [--latency-ms MS] [--database-url postgres://...]

Generates N synthetic KMS events (audits.synthetic, 2 accounts x 3 regions, 3 days) as CloudTrail log
files of `per-file` records in the trail's layout, uploads them to the AWS emulator (moto in server
mode, started here in its own process), then in fresh PostgreSQL databases measures:
  baseline  `import_cloudtrail DIR` over the same files on local disk;
  s3        `ingest_cloudtrail --source s3` for the same days: listing, GetObject over HTTP, the
            ledger of processed objects, the checkpoints;
  s3 rerun  the same pass again: every object is skipped through the ledger.
Each import runs in its own process. Prints events/s, the ratio to the baseline and GetObject calls.
The emulator shares the machine's cores with the importer and PostgreSQL and answers in a few
milliseconds; real S3 takes tens of milliseconds to a GetObject's first byte, so --latency-ms
(default 30) makes the emulator wait that long before answering each GetObject of a log file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")

from bench.ingest_bench import recreate_pg_database  # noqa: E402

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kmsdash_s3_bench"
BUCKET = "kmsdash-bench-trail"
DAYS = 3
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator() -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator.server", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **AWS_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/_kmsdash/requests", timeout=1)
            return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the emulator did not start")


def log_files(events: int, per_file: int, start: datetime) -> list[tuple[str, bytes]]:
    """(S3 key, gzip body): the records of each (account, region, day) in files of `per_file`."""
    from audits.synthetic import generate_records

    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for record in generate_records(events, seed=11, start=start, days=DAYS):
        groups[(record["recipientAccountId"], record["awsRegion"], record["eventTime"][:10])].append(record)
    files = []
    for (account, region, day), records in sorted(groups.items()):
        year, month, dom = day.split("-")
        for n in range(0, len(records), per_file):
            key = (
                f"AWSLogs/{account}/CloudTrail/{region}/{year}/{month}/{dom}/"
                f"{account}_CloudTrail_{region}_{year}{month}{dom}T0000Z_{n // per_file:06d}.json.gz"
            )
            body = json.dumps({"Records": records[n : n + per_file]}, separators=(",", ":")).encode()
            files.append((key, gzip.compress(body, 6)))
    return files


def upload(url: str, files: list[tuple[str, bytes]]) -> None:
    """The trail's bucket in the emulator at `url`, holding `files`."""
    import boto3  # here, as before in main(): the child processes never need it

    s3 = boto3.client(
        "s3", region_name="us-east-1", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    s3.create_bucket(Bucket=BUCKET)
    for key, body in files:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def child(mode: str, argument: str) -> dict:
    """One import in this (fresh) process: `files DIR` or `s3 SINCE`."""
    import django

    django.setup()
    from django.core.management import call_command

    from audits.models import Event, IngestRun, Source

    call_command("migrate", verbosity=0)
    command = (
        ["import_cloudtrail", argument]
        if mode == "files"
        else [
            "ingest_cloudtrail",
            "--source",
            "s3",
            "--since",
            argument,
            "--until",
            (datetime.fromisoformat(argument) + timedelta(days=DAYS)).isoformat(),
        ]
    )
    if mode != "files":
        for account in ("111122223333", "444455556666"):
            Source.objects.update_or_create(
                account_id=account,
                defaults={
                    "regions": ["us-east-1", "eu-west-1", "ap-southeast-2"],
                    "s3_bucket": BUCKET,
                    "lookup_enabled": False,
                },
            )
    before = Event.objects.count()
    started, cpu = time.perf_counter(), time.process_time()
    call_command(*command, stdout=open(os.devnull, "w"))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    runs = IngestRun.objects.filter(kind=IngestRun.Kind.S3 if mode != "files" else IngestRun.Kind.FILES)
    return {
        "seconds": elapsed,
        "cpu": cpu,
        "new": Event.objects.count() - before,
        "events": Event.objects.count(),
        "records": sum(runs.values_list("records_read", flat=True)),
    }


def run_child(database_url: str, env: dict, mode: str, argument: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, argument],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **env, "DATABASE_URL": database_url, "KMSDASH_LOG_LEVEL": "WARNING"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--per-file", type=int, default=500)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG))
    parser.add_argument("--child", nargs=2, metavar=("MODE", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    start = datetime.combine(datetime.now(UTC).date() - timedelta(days=DAYS - 1), datetime.min.time(), tzinfo=UTC)
    files = log_files(args.events, args.per_file, start)
    workdir = Path(tempfile.mkdtemp(prefix="kmsdash-s3-bench-"))
    emulator, url = start_emulator()
    try:
        for key, body in files:
            path = workdir / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        env = {**AWS_ENV, "AWS_ENDPOINT_URL": url}
        upload(url, files)
        size = sum(len(body) for _, body in files)
        print(
            f"{args.events} events in {len(files)} objects of {args.per_file} records ({size / len(files) / 1024:.0f} KiB "
            f"each), {DAYS} days, 2 accounts x 3 regions; {args.latency_ms:.0f} ms to each GetObject's answer"
        )

        recreate_pg_database(args.database_url)
        base = run_child(args.database_url, env, "files", str(workdir))
        recreate_pg_database(args.database_url)
        urllib.request.urlopen(urllib.request.Request(f"{url}/_kmsdash/reset", data=b"{}", method="POST"))
        if args.latency_ms:
            delay = {"target": ".json.gz", "error": "", "delay": args.latency_ms / 1000, "count": 10**9}
            urllib.request.urlopen(
                urllib.request.Request(f"{url}/_kmsdash/faults", data=json.dumps(delay).encode(), method="POST")
            )
        first = run_child(args.database_url, env, "s3", start.isoformat())
        gets = sum(
            1
            for r in json.loads(urllib.request.urlopen(f"{url}/_kmsdash/requests").read())
            if r["target"].startswith(f"s3:GET /{BUCKET}/")
        )
        again = run_child(args.database_url, env, "s3", start.isoformat())
        recreate_pg_database(args.database_url, drop_only=True)

        base_rate = base["new"] / base["seconds"]
        print(
            f"baseline  import_cloudtrail (local files)   {base_rate:>9,.0f} events/s  cpu {base['cpu'] / base['new'] * 1e6:.0f} "
            f"us/event  events {base['events']}"
        )
        rate = first["new"] / first["seconds"]
        print(
            f"s3        ingest_cloudtrail --source s3     {rate:>9,.0f} events/s  ratio {rate / base_rate:.2f}  "
            f"cpu {first['cpu'] / first['new'] * 1e6:.0f} us/event  events {first['events']}  GetObject {gets}"
        )
        print(f"s3 rerun  every object skipped (ledger)     {again['seconds']:>9.2f} s  new events {again['new']}")
        assert first["events"] == base["events"] == again["events"], "the S3 pass must store what the files hold"
    finally:
        emulator.terminate()
        emulator.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
