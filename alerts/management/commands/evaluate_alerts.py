from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from alerts.services import evaluate


class Command(BaseCommand):
    help = "Run one alert evaluation over what landed since the previous one (the same code as the task)."

    def handle(self, *args, **options):
        result = evaluate()
        self.stdout.write(json.dumps({k: v for k, v in vars(result).items() if k != "alerts"}, sort_keys=True))
        if result.status != "done":
            self.stderr.write(
                "Another evaluation is running."
                if result.status == "skipped"
                else "Ingestion did not pause in time: events were not judged, run again."
            )
