"""Hostile log files: time and peak memory of reading each, the previous reader against this one.

    python bench/hostile_files_bench.py [--old REV] [--timeout 120] [--memory-limit-mib 3072] [--rounds 3]
                                        [--events 100000] [--only CASE,...]

Writes each case's file into a temporary directory, then reads it in a fresh process per reader
(`iter_file_records` of audits/sources/files.py at REV, default the commit before this reader, loaded
from git, and of the working tree), counting what it yields, and reports wall time, CPU time and
peak RSS (ru_maxrss of that process, and its RSS before reading: Django and the readers' imports).
A process is killed at --timeout seconds and given --memory-limit-mib of address space, so the old
reader's worst cases cannot take the machine down; they are reported as such.

Cases: the issue's example (1 good record, a 4,000-digit number, 3 good), NaN in the second record,
a gzip holding a 300 MB string, a gzip of 1.2 GB of whitespace, a gzip of a 1.2 GiB string (both
past the 1 GiB decompression limit), 1,000,000 nested '[' (closed), 120 MB of `{}` items (40 million
of them), gzip files whose CRC or length trailer lies, and ordinary files
(`normal`: --events synthetic records in files of 1,000, events/s and CPU per event, best of --rounds,
both readers alternating in one process).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsdash.settings")

OLD_REV = "62db1a7"  # the last commit with the orjson-whole / ijson-streaming reader
START = datetime(2026, 10, 1, tzinfo=UTC)


def gzip_stream(path: Path, pieces: Iterator[bytes]) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        for piece in pieces:
            out.write(compressor.compress(piece))
        out.write(compressor.flush())


def repeated(piece: bytes, total: int) -> Iterator[bytes]:
    block = piece * max(1, (8 << 20) // len(piece))
    for _ in range(total // len(block)):
        yield block


def good_records(n: int, seed: int = 3) -> list[bytes]:
    from audits.synthetic import generate_records

    return [json.dumps(r, separators=(",", ":")).encode() for r in generate_records(n, seed=seed, start=START)]


def make_cases(directory: Path, only: set[int]) -> dict[str, Path]:
    good = good_records(4)
    cases: dict[str, Callable[[Path], object]] = {
        "issue example (1 good, 4,000-digit number, 3 good)": lambda p: p.write_bytes(
            gzip.compress(
                b'{"Records":[' + b",".join([good[0], good[1][:-1] + b',"n":' + b"7" * 4000 + b"}", *good[1:]]) + b"]}"
            )
        ),
        "NaN in the second of 4 records": lambda p: p.write_bytes(
            gzip.compress(b'{"Records":[' + b",".join([good[0], good[1][:-1] + b',"n":NaN}', *good[2:]]) + b"]}")
        ),
        "300 MB string": lambda p: gzip_stream(
            p,
            iter(
                [b'{"Records":[' + good[0] + b',{"userAgent":"', *repeated(b"A", 300_000_000), b'"},' + good[1] + b"]}"]
            ),
        ),
        "1.2 GB of whitespace (gzip)": lambda p: gzip_stream(
            p, iter([b'{"Records":[' + good[0], *repeated(b" ", 1_200_000_000), b"," + good[1] + b"]}"])
        ),
        "1.2 GiB string (gzip)": lambda p: gzip_stream(
            p, iter([b'{"Records":[' + good[0] + b',{"userAgent":"', *repeated(b"A", 1_288_490_189), b'"}]}'])
        ),
        "1,000,000 nested [ (closed)": lambda p: p.write_bytes(
            gzip.compress(
                b'{"Records":[' + good[0] + b',{"x":' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}," + good[1] + b"]}"
            )
        ),
        "120 MB of {} items (40 million, gzip)": lambda p: gzip_stream(
            p, iter([b'{"Records":[{}', *repeated(b",{}", 120_000_000), b"]}"])
        ),
        "gzip with a lying CRC trailer (4 records)": lambda p: p.write_bytes(
            (lambda data: data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])(
                gzip.compress(b'{"Records":[' + b",".join(good) + b"]}")
            )
        ),
        "gzip with a lying length trailer (4 records)": lambda p: p.write_bytes(
            (lambda data: data[:-1] + bytes([data[-1] ^ 1]))(gzip.compress(b'{"Records":[' + b",".join(good) + b"]}"))
        ),
    }
    paths = {}
    for n, (name, write) in enumerate(cases.items()):
        if only and n not in only:
            continue
        path = directory / f"case{n}.json.gz"
        write(path)
        paths[name] = path
    return paths


def load_reader(which: str, rev: str):
    import django

    django.setup()
    if which == "new":
        from audits.sources import files

        return files
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:audits/sources/files.py"], check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="kmsdash-old-reader-")) / "old_files.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("old_files", path)
    assert spec is not None and spec.loader is not None  # a .py path always has a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_files"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_case(which: str, rev: str, path: str) -> dict:
    reader = load_reader(which, rev)
    before = rss_mib()
    started, cpu = time.perf_counter(), time.process_time()
    kinds: dict[str, int] = {}
    error = ""
    try:
        with open(path, "rb") as stream:
            for item in reader.iter_file_records(stream, name="case", max_decompressed=1 << 30):
                kind = type(item).__name__
                kinds[kind] = kinds.get(kind, 0) + 1
    except reader.FileError as exc:
        error = " ".join(str(exc).replace("case: ", "").split())[:70]
    except MemoryError:
        error = "MemoryError"
    return {
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "rss_before": before,
        "peak_rss": rss_mib(),
        "kinds": kinds,
        "error": error,
    }


def child_normal(rev: str, directory: str, rounds: int) -> dict:
    readers = {"old": load_reader("old", rev), "new": load_reader("new", rev)}
    paths = sorted(Path(directory).glob("*.json.gz"))
    best: dict[str, tuple[float, float, int]] = {}
    for _ in range(rounds):
        for which, reader in readers.items():
            count = 0
            started, cpu = time.perf_counter(), time.process_time()
            for path in paths:
                with path.open("rb") as stream:
                    count += sum(1 for _ in reader.iter_file_records(stream, name=str(path)))
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            if which not in best or cpu < best[which][1]:
                best[which] = (seconds, cpu, count)
    return {which: {"seconds": s, "cpu": c, "events": n} for which, (s, c, n) in best.items()}


def run_child(args: list[str], options: argparse.Namespace, timeout: float) -> dict | str:
    def limit() -> None:
        limit_bytes = options.memory_limit_mib << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    env = dict(os.environ, KMSDASH_LOG_LEVEL="WARNING")
    try:
        command = [sys.executable, __file__, "--old", options.old, "--rounds", str(options.rounds), "--child", *args]
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, preexec_fn=limit, env=env)
    except subprocess.TimeoutExpired:
        return f"killed after {timeout:.0f} s"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed: {last[:80]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default=OLD_REV, help="git revision of the previous reader")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--memory-limit-mib", type=int, default=3072)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--only", default="", help="comma-separated case numbers (0-9; 9 = normal)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        report = (
            child_normal(args.old, rest[0], args.rounds) if kind == "normal" else child_case(kind, args.old, rest[0])
        )
        print(json.dumps(report))
        return

    import django

    django.setup()
    only = {int(n) for n in args.only.split(",") if n}
    with tempfile.TemporaryDirectory(prefix="kmsdash-hostile-") as tmp:
        directory = Path(tmp)
        cases = make_cases(directory, only)
        print(f"{'case':<52} {'reader':<6} {'wall s':>8} {'cpu s':>8} {'peak RSS':>9} {'(start)':>8}  yielded / error")
        for name, path in cases.items():
            size = path.stat().st_size
            for which in ("old", "new"):
                result = run_child([which, str(path)], args, args.timeout)
                label = f"{name} [{size / 1e6:.1f} MB]" if which == "old" else ""
                if isinstance(result, str):
                    print(f"{label:<52} {which:<6} {result}")
                    continue
                yielded = ", ".join(f"{count} {kind}" for kind, count in sorted(result["kinds"].items())) or "nothing"
                error = f"; then {result['error']}" if result["error"] else ""
                print(
                    f"{label:<52} {which:<6} {result['seconds']:>8.2f} {result['cpu']:>8.2f} "
                    f"{result['peak_rss']:>5.0f} MiB {result['rss_before']:>4.0f} MiB  {yielded}{error}"
                )
            sys.stdout.flush()
        if not only or 9 in only:
            from audits.synthetic import generate_records, write_log_files

            logs = directory / "normal"
            write_log_files(generate_records(args.events, seed=1, start=START, days=30), logs, per_file=1000)
            result = run_child(["normal", str(logs)], args, 20 * args.timeout)
            if isinstance(result, str):
                print(f"normal files: {result}")
                return
            for which in ("old", "new"):
                r = result[which]
                print(
                    f"normal files ({r['events']} events in files of 1,000), {which}: "
                    f"{r['events'] / r['seconds']:,.0f} events/s, cpu {r['cpu'] / r['events'] * 1e6:.1f} us/event "
                    f"(best of {args.rounds})"
                )
            print(f"new/old CPU per event: {result['new']['cpu'] / result['old']['cpu']:.3f}")


if __name__ == "__main__":
    main()
