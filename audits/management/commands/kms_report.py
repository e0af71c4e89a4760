"""Print the KMS usage report (from the daily rollups) as JSON or CSV.

--since/--until are inclusive UTC days; a date-time is truncated to its UTC day, because the
rollups the report reads are daily.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from audits.report import CSV_HEADER, as_utc_day, kms_report, report_csv_rows
from kmsdash.csvexport import csv_lines


class Command(BaseCommand):
    help = "KMS usage per key from the daily rollups (JSON or CSV). Dates are inclusive UTC days."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=("json", "csv"), default="json")
        parser.add_argument("--since", help="First UTC day (ISO date, or date-time truncated to its day).")
        parser.add_argument("--until", help="Last UTC day, inclusive (ISO date, or date-time truncated to its day).")
        parser.add_argument("--account-id")
        parser.add_argument("--region")
        parser.add_argument("--key", help="Key ARN.")

    def handle(self, *args, **options):
        try:
            since, until = as_utc_day(options["since"]), as_utc_day(options["until"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if since and until and since > until:
            raise CommandError("--since is after --until")
        report = kms_report(
            since=since,
            until=until,
            account_id=options["account_id"],
            region=options["region"],
            key=options["key"],
        )
        if options["format"] == "json":
            self.stdout.write(json.dumps(report, indent=2))
        else:
            for line in csv_lines(CSV_HEADER, report_csv_rows(report)):
                self.stdout.write(line, ending="")
