"""Import CloudTrail KMS events from local files: trail log files or saved LookupEvents output.

A file that cannot be read whole (truncated, corrupt, too large once decompressed) is quarantined
and the others still land; the command fails only when it cannot run at all.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audits.sources.files import import_files


class Command(BaseCommand):
    help = 'Import CloudTrail records ({"Records": [...]} or LookupEvents {"Events": [...]}, .json or .json.gz).'

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="Files, or directories searched recursively.")
        parser.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args, **options):
        try:
            result = import_files(options["paths"], batch_size=options["batch_size"])
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        counts = result.counts
        self.stdout.write(
            f"files: {result.files}\n"
            f"records read: {counts.records_read}\n"
            f"new KMS events: {counts.events_new}\n"
            f"duplicates: {counts.duplicates}\n"
            f"ignored (not KMS): {counts.ignored}\n"
            f"quarantined: {counts.quarantined}\n"
            f"expired (older than the retention purge): {counts.expired}"
        )
