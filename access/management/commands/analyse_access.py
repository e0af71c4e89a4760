"""Recompute who can use each key (every account the inventory read), then the findings."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from access import analysis, selectors
from inventory import findings


class Command(BaseCommand):
    help = "Run the access analysis for every account with keys (or one), then recompute the findings."

    def add_arguments(self, parser):
        parser.add_argument("--account-id", help="Only this account.")

    def handle(self, *args, account_id=None, **options):
        for account in [account_id] if account_id else selectors.analysable_accounts():
            counts = analysis.analyse_account(account)
            if counts is None:
                self.stderr.write(f"{account}: another analysis is running, skipped")
                continue
            self.stdout.write(
                f"{account}: {counts['keys']} keys, {counts['entries']} access entries, "
                f"{counts['escalations']} escalation paths, {counts['unreadable']} unreadable documents"
            )
        result = findings.recompute()
        if result is None:
            self.stderr.write("findings: another recompute is running, skipped")
        else:
            self.stdout.write(
                f"findings: {result['opened']} opened, {result['held']} held, {result['resolved']} resolved"
            )
