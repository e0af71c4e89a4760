"""Run one CloudTrail ingestion pass now, with the same code and locks as the scheduled tasks."""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from audits.models import IngestRun
from audits.services import KINDS, run_scope, scopes
from kmsdash.dates import parse_utc


def parse_when(value: str) -> datetime:
    try:
        return parse_utc(value)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not an ISO 8601 date or date-time") from exc


class Command(BaseCommand):
    help = (
        "Read CloudTrail KMS events once, synchronously, for every enabled source and region (or the "
        "ones named). --since/--until read exactly that range; they never move a checkpoint backwards."
    )

    def add_arguments(self, parser):
        parser.add_argument("--source", choices=[str(kind) for kind in KINDS], help="Only LookupEvents or S3.")
        parser.add_argument("--account-id")
        parser.add_argument("--region")
        parser.add_argument("--since", type=parse_when, help="UTC unless an offset is given.")
        parser.add_argument("--until", type=parse_when, help="UTC unless an offset is given.")

    def handle(self, *args, **options):
        since, until = options["since"], options["until"]
        if since and until and since >= until:
            raise CommandError("--since must be before --until")
        kinds = [options["source"]] if options["source"] else list(KINDS)
        failed = 0
        ran = 0
        for kind in kinds:
            for account_id, region in scopes(kind, account_id=options["account_id"], region=options["region"]):
                ran += 1
                label = f"{IngestRun.Kind(kind).label} {account_id} {region}"
                try:
                    result = run_scope(kind, account_id, region, since=since, until=until)
                except Exception as exc:  # one scope's failure must not hide the others' results
                    failed += 1
                    self.stderr.write(f"{label}: failed: {type(exc).__name__}: {exc}")
                    continue
                if result.counts is None:
                    self.stdout.write(f"{label}: {result.status}")
                    continue
                c = result.counts
                self.stdout.write(
                    f"{label}: {result.status}, {result.runs} run(s), {c.records_read} read, {c.events_new} new, "
                    f"{c.duplicates} duplicate, {c.ignored} ignored, {c.quarantined} quarantined"
                    + (f", {c.expired} expired" if c.expired else "")
                )
        if not ran:
            self.stdout.write("No enabled source matches.")
        if failed:
            raise CommandError(f"{failed} scope(s) failed")
