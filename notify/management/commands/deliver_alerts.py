"""Send the pending alert notifications now, with the same code as the Celery task."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from notify.delivery import deliver_pending


class Command(BaseCommand):
    help = (
        "Run one delivery pass: every notification whose retry time has come gets one attempt "
        "(--now: every pending one, whatever its backoff). For cron-style use and tests."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--now", action="store_true", help="Ignore the backoff: attempt every pending notification."
        )

    def handle(self, *args, **options):
        result = deliver_pending(ignore_backoff=options["now"])
        self.stdout.write(
            f"{result.claimed} due: {result.delivered} delivered, {result.retrying} to retry, "
            f"{result.failed} failed for good, {result.released} left for the next pass."
        )
