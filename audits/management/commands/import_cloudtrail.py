"""Import CloudTrail KMS events from local files: trail log files or saved LookupEvents output.

A file that cannot be read whole (truncated, corrupt, too large once decompressed) is quarantined
and the others still land; the command fails only when it cannot run at all.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audits.ingest import Ingestor, bulk_gc, finish_run, start_run
from audits.models import IngestRun
from audits.sources.files import FileError, iter_file_records

SUFFIXES = (".json", ".json.gz")


def collect_files(paths: list[str]) -> list[Path]:
    """The files named, and the .json/.json.gz files under the directories named, in a stable order."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
            )
        elif path.is_file():
            found.append(path)
        else:
            raise CommandError(f"No such file or directory: {name}")
    return found


class Command(BaseCommand):
    help = "Import CloudTrail records ({\"Records\": [...]} or LookupEvents {\"Events\": [...]}, .json or .json.gz)."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="Files, or directories searched recursively.")
        parser.add_argument("--batch-size", type=int, default=None)

    @bulk_gc()
    def handle(self, *args, **options):
        files = collect_files(options["paths"])
        run = start_run(IngestRun.Kind.FILES)
        # A bulk import: let the database write one batch while the next is parsed.
        ingestor = Ingestor(run, batch_size=options["batch_size"], background_writes=True)
        try:
            for path in files:
                location = str(path)
                try:
                    with path.open("rb") as stream:
                        for record in iter_file_records(stream, name=location):
                            ingestor.add(record, location=location)
                except (FileError, OSError) as exc:
                    ingestor.quarantine(location=location, reason=str(exc))
            ingestor.flush()
        except BaseException as exc:
            finish_run(run, ingestor.counts, status=IngestRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
            raise
        IngestRun.objects.filter(pk=run.pk).update(files=len(files))
        finish_run(run, ingestor.counts)
        counts = ingestor.counts
        self.stdout.write(
            f"files: {len(files)}\n"
            f"records read: {counts.records_read}\n"
            f"new KMS events: {counts.events_new}\n"
            f"duplicates: {counts.duplicates}\n"
            f"ignored (not KMS): {counts.ignored}\n"
            f"quarantined: {counts.quarantined}\n"
            f"expired (older than the retention purge): {counts.expired}"
        )
