from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from alerts import selectors
from alerts.models import Kind
from alerts.services import as_json
from kmsdash.csvexport import csv_lines
from kmsdash.dates import parse_utc

COLUMNS = selectors.JSON_FIELDS


class Command(BaseCommand):
    help = "Print alerts as JSON or CSV (open ones unless --state all)."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["json", "csv"], default="json")
        parser.add_argument(
            "--state",
            choices=["open", "all"],
            default="open",
            help="open: every alert not resolved (open, acknowledged, snoozed); all: resolved too.",
        )
        parser.add_argument("--kind", choices=Kind.values, default="")
        parser.add_argument("--since", default="", help="Alerts detected at or after this ISO date or date-time (UTC).")

    def handle(self, *args, format="json", state="open", kind="", since="", **options):
        when = None
        if since:
            try:
                when = parse_utc(since)
            except ValueError as exc:
                raise CommandError("--since must be an ISO date or date-time") from exc
        rows = [
            as_json(alert)
            for alert in selectors.alerts(
                state="active" if state == "open" else "all", kind=kind, detected_since=when
            ).order_by("id")
        ]
        if format == "json":
            self.stdout.write(json.dumps({"alerts": rows}, indent=2))
            return
        for line in csv_lines(COLUMNS, ([row[c] for c in COLUMNS] for row in rows)):
            self.stdout.write(line, ending="")
