from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from inventory import findings, selectors
from kmsdash.csvexport import csv_lines

COLUMNS = [
    "kind",
    "severity",
    "key",
    "subject",
    "account_id",
    "region",
    "summary",
    "status",
    "first_seen_at",
    "last_seen_at",
    "resolved_at",
    "evidence",
]


class Command(BaseCommand):
    help = "Print findings as JSON or CSV (open ones unless --status says otherwise)."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["json", "csv"], default="json")
        parser.add_argument("--status", choices=["open", "accepted", "resolved", "all"], default="open")
        parser.add_argument("--kind", default="")
        parser.add_argument("--recompute", action="store_true", help="Recompute from the inventory and rollups first.")

    def handle(self, *args, format="json", status="open", kind="", recompute=False, **options):
        if recompute and findings.recompute() is None:
            self.stderr.write("Another recompute is running: showing the findings stored before it.")
        rows = [
            {
                "kind": f.kind,
                "severity": f.severity,
                "key": f.key,
                "subject": f.subject,
                "account_id": f.account_id,
                "region": f.region,
                "summary": f.summary,
                "status": f.status,
                "first_seen_at": f.first_seen_at.isoformat(),
                "last_seen_at": f.last_seen_at.isoformat(),
                "resolved_at": f.resolved_at.isoformat() if f.resolved_at else None,
                "accepted_by": f.accepted_by.get_username() if f.accepted_by else None,
                "accepted_reason": f.accepted_reason,
                "evidence": f.evidence,
            }
            for f in selectors.findings(kind=kind, status=status)
        ]
        if format == "json":
            self.stdout.write(json.dumps({"findings": rows}, indent=2, sort_keys=True))
            return
        lines = csv_lines(
            COLUMNS,
            ([json.dumps(r[c], sort_keys=True) if c == "evidence" else r[c] for c in COLUMNS] for r in rows),
        )
        for line in lines:
            self.stdout.write(line, ending="")
