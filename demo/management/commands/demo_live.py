"""Keep a running demo alive: new synthetic KMS activity every minute, for the scheduled tasks to ingest."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from demo.seed import Emulator, NotTheEmulator, find_keys, push_live


class Command(BaseCommand):
    help = (
        "Every --interval seconds, deliver the demo world's traffic of the time that passed to the "
        "emulator (S3 log files and LookupEvents), as CloudTrail would. Runs until stopped."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--endpoint", required=True, help="The emulator's URL, e.g. http://127.0.0.1:5055")
        parser.add_argument("--interval", type=float, default=60)
        parser.add_argument("--events-per-day", type=float, default=3000)

    def handle(self, *args, endpoint: str, interval: float, events_per_day: float, **options) -> None:
        if not settings.KMSDASH_DEMO:
            raise CommandError("Refusing to run: KMSDASH_DEMO is not True, so this is not a demo installation.")
        emulator = Emulator(endpoint)
        try:
            emulator.check()
        except NotTheEmulator as exc:
            raise CommandError(str(exc)) from exc
        keys = find_keys(emulator)
        if not keys:
            raise CommandError("The emulator holds none of the demo world's keys: run seed_demo first.")
        since = datetime.now(UTC).replace(second=0, microsecond=0)
        while True:
            time.sleep(max(0.0, (since + timedelta(seconds=interval) - datetime.now(UTC)).total_seconds()))
            until = datetime.now(UTC).replace(microsecond=0)
            count = push_live(emulator, keys, start=since, end=until, events_per_day=events_per_day)
            self.stdout.write(f"{until:%H:%M:%S} delivered {count} events")
            self.stdout.flush()
            since = until
