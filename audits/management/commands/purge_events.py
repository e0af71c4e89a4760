"""`manage.py purge_events [--days N] [--dry-run]`: the retention purge, as the daily Celery task runs it."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audits.retention import purge_events


class Command(BaseCommand):
    help = (
        "Delete events older than KMSDASH_EVENT_RETENTION_DAYS (or --days), except critical key-management "
        "events, and the raw records only they used. Rollups, and so every count, are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="Days to keep (default: KMSDASH_EVENT_RETENTION_DAYS).")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args, days=None, dry_run=False, **options):
        if days is not None and days <= 0:
            raise CommandError("--days must be at least 1")
        result = purge_events(days=days, dry_run=dry_run)
        if result.horizon is None:
            self.stdout.write("Retention is off (KMSDASH_EVENT_RETENTION_DAYS=0): nothing purged.")
            return
        if result.skipped:
            self.stdout.write("Another purge is running: nothing done.")
            return
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(
            f"events before {result.horizon:%Y-%m-%d %H:%M} UTC: {verb} {result.events} events, "
            f"and {result.raw_blocks} raw record blocks ({result.raw_blocks_rewritten} rewritten with the records "
            "of kept events only)"
        )
