from __future__ import annotations

import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from costs import selectors
from costs.services import utc_today
from kmsdash.csvexport import csv_lines
from kmsdash.dates import parse_day


class Command(BaseCommand):
    help = (
        "Print KMS costs as stored from Cost Explorer: JSON (daily totals by usage type and account, month to "
        "date, Cost Explorer requests made in the period) or CSV (the daily table). Days are UTC dates; "
        "--until is included. Default: the current month to today."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--format", choices=("json", "csv"), default="json")
        parser.add_argument("--since", type=parse_day, help="First day, YYYY-MM-DD.")
        parser.add_argument("--until", type=parse_day, help="Last day, YYYY-MM-DD (included).")

    def handle(self, *args, format: str, since: date | None = None, until: date | None = None, **options) -> None:
        today = utc_today()
        until = until or today
        since = since or selectors.month_start(until)
        if since > until:
            raise CommandError("--since is after --until")
        if format == "csv":
            for line in csv_lines(selectors.DAILY_TABLE_HEADER, selectors.daily_table(since, until)):
                self.stdout.write(line, ending="")
            return
        report = {
            "currency": "USD",
            "days": [
                {
                    "date": day.day.isoformat(),
                    "total": selectors.money(day.total),
                    "estimated": day.estimated,
                    "by_usage_type": {k: selectors.money(v) for k, v in sorted(day.by_usage_type.items())},
                    "by_account": {k: selectors.money(v) for k, v in sorted(day.by_account.items())},
                }
                for day in selectors.daily_costs(since, until)
            ],
            "month_to_date": selectors.money(selectors.total_between(selectors.month_start(today), today)),
            "api_requests": selectors.api_spend(since, until).requests,
        }
        self.stdout.write(json.dumps(report, indent=2))
