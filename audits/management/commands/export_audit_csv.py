"""Write the audit CSV from the command line: the same query and bytes as /events/export.csv."""

from __future__ import annotations

import getpass
import sys

from django.core.management.base import BaseCommand, CommandError

from audits.exports import KIND, Snapshot, audit_filters, stream_export
from audits.filters import ERROR_ANY, EventFilter
from kmsdash.csvexport import start_export_audit
from kmsdash.models import ExportAudit


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


class Command(BaseCommand):
    help = "Export KMS events as CSV (the web export's columns and filters); the export is audited."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--key", help="Key ARN or key id.")
        parser.add_argument("--principal", help="Principal ARN.")
        parser.add_argument("--operation", help="Event name, e.g. Decrypt.")
        parser.add_argument("--account", help="Recipient AWS account id.")
        parser.add_argument("--region")
        parser.add_argument("--failed", action="store_true", help="Only events with an error code.")
        parser.add_argument("--after-hours", action="store_true", help="Only events outside business hours.")
        parser.add_argument("--since", help="ISO date or date-time (UTC), inclusive.")
        parser.add_argument("--until", help="ISO date or date-time (UTC), inclusive.")
        parser.add_argument("--output", "-o", help="File to write; standard output when omitted.")

    def handle(self, *args, **options) -> None:
        params = {
            name: options[name]
            for name in ("key", "principal", "operation", "account", "region", "since", "until")
            if options[name]
        }
        if options["failed"]:
            params["error"] = ERROR_ANY
        if options["after_hours"]:
            params["after_hours"] = "1"
        event_filter = EventFilter.from_querydict(params)
        if event_filter.errors:
            raise CommandError(" ".join(event_filter.errors))

        # Open the destination first: a path that can't be written must not leave an audit row behind.
        output = open(options["output"], "wb") if options["output"] else sys.stdout.buffer
        try:
            snapshot = Snapshot.now()
            audit = start_export_audit(user=None, kind=KIND, filters=audit_filters(event_filter, snapshot), via="cli")
            ExportAudit.objects.filter(pk=audit.pk).update(username=_os_user())
            for chunk in stream_export(event_filter, snapshot, audit):
                output.write(chunk)
            output.flush()
        finally:
            if options["output"]:
                output.close()
        audit.refresh_from_db()
        self.stderr.write(f"Exported {audit.rows} events (sha256 {audit.sha256}).")
