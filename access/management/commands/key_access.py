"""Print who can use each key, and the escalation paths, as JSON or CSV (the access analysis)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from access import analysis, selectors
from kmsdash.csvexport import csv_lines

COLUMNS = ["key", "principal", "actions", "conditional", "conditions", "via", "used", "notes"]
ESCALATION_COLUMNS = ["key", "principal", "gains", "path"]


class Command(BaseCommand):
    help = "Print the access analysis: every key's principals, how they get each right, and escalation paths."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["json", "csv"], default="json")
        parser.add_argument("--key", default="", help="Only this key (ARN).")
        parser.add_argument("--principal", default="", help="Only this principal (ARN).")
        parser.add_argument("--analyse", action="store_true", help="Recompute every account's analysis first.")

    def handle(self, *args, format="json", key="", principal="", analyse=False, **options):
        if analyse:
            for account in selectors.analysable_accounts():
                if analysis.analyse_account(account) is None:
                    self.stderr.write(f"Another analysis of {account} is running: showing what is stored.")
        result = selectors.key_access(key_arn=key or None, principal_arn=principal or None)
        if format == "json":
            self.stdout.write(json.dumps(result, indent=2, sort_keys=False))
            return
        # CSV: one row per access entry, then one per escalation path under its own header; cells
        # that hold lists or objects are JSON, and every cell is neutralised for spreadsheets.
        rows = (
            [
                k["key"]
                if c == "key"
                else json.dumps(e[c], sort_keys=True)
                if c in ("actions", "conditions", "via", "notes")
                else e[c]
                for c in COLUMNS
            ]
            for k in result["keys"]
            for e in k["access"]
        )
        for line in csv_lines(COLUMNS, rows):
            self.stdout.write(line, ending="")
        if result["escalations"]:
            self.stdout.write("\r\n", ending="")
            esc_rows = (
                [json.dumps(p[c]) if c in ("gains", "path") else p[c] for c in ESCALATION_COLUMNS]
                for p in result["escalations"]
            )
            for line in csv_lines(ESCALATION_COLUMNS, esc_rows):
                self.stdout.write(line, ending="")
