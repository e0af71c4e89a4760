from __future__ import annotations

from datetime import date

from botocore.exceptions import BotoCoreError
from django.core.management.base import BaseCommand, CommandError

from costs import services
from costs.explorer import CostExplorerError
from kmsdash.dates import parse_day


class Command(BaseCommand):
    help = (
        "Read KMS daily costs from Cost Explorer and replace the stored days. Default window: the first "
        "day of the previous month to today (UTC). Each Cost Explorer request costs $0.01."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", type=parse_day, help="First day, YYYY-MM-DD (UTC).")
        parser.add_argument("--until", type=parse_day, help="Last day, YYYY-MM-DD (UTC), included.")

    def handle(self, *args, since: date | None = None, until: date | None = None, **options) -> None:
        try:
            run = services.ingest_costs(since=since, until=until, via="cli")
        except (CostExplorerError, BotoCoreError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{run.rows} cost rows for {run.window_start} .. {run.window_end} (end excluded); "
            f"{run.requests} Cost Explorer requests, {run.pages} pages, {run.restarts} restarts"
        )
