"""Print the request-quota headroom of every (account, region, quota class) as JSON or CSV.

--since/--until are ISO dates or date-times (UTC); a date means its whole UTC day, so --until is
inclusive. Rates are requests per second (a minute's calls / 60) with one decimal.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from audits.filters import Bound, EventFilter
from capacity import selectors
from kmsdash.csvexport import csv_lines


class Command(BaseCommand):
    help = "Peak request rate against the KMS request quotas per account, region and quota class (JSON or CSV)."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=("json", "csv"), default="json")
        parser.add_argument("--since", help="Start (ISO date or date-time, UTC), inclusive.")
        parser.add_argument("--until", help="End (ISO date: that whole day; or date-time, UTC), inclusive.")
        parser.add_argument("--account-id", default="")
        parser.add_argument("--region", default="")

    def handle(self, *args, **options):
        try:
            f = EventFilter(
                since=Bound.parse(options["since"]) if options["since"] else None,
                until=Bound.parse(options["until"]) if options["until"] else None,
            )
        except ValueError as exc:
            raise CommandError(f"--since/--until: {exc}") from exc
        if f.start and f.end and f.start >= f.end:
            raise CommandError("--since is after --until")
        data = selectors.report(f.start, f.end, options["account_id"] or "", options["region"] or "")
        if options["format"] == "json":
            self.stdout.write(json.dumps(data, indent=2))
        else:
            for line in csv_lines(selectors.CSV_HEADER, selectors.report_csv_rows(data)):
                self.stdout.write(line, ending="")
