from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from access import ingest
from audits.models import Source


class Command(BaseCommand):
    help = "Read IAM (users, groups, roles, policies, boundaries) and the SCPs over each configured account."

    def add_arguments(self, parser):
        parser.add_argument("--account-id", help="Only this configured account.")

    def handle(self, *args, account_id=None, **options):
        sources: list[Source | None] = list(Source.objects.filter(enabled=True))
        if account_id:
            sources = [s for s in sources if s is not None and s.account_id == account_id]
        if not Source.objects.exists():
            sources = [None]  # no account configured: the default credential chain's own account
        if not sources:
            raise CommandError("Nothing to read: no enabled account matches.")
        failures = 0
        for source in sources:
            name = ingest.lock_name(source)
            try:
                run = ingest.ingest_iam(source)
            except Exception as exc:  # noqa: BLE001 - one account failing does not stop the others
                failures += 1
                self.stderr.write(f"{name}: failed: {type(exc).__name__}: {exc}")
                continue
            if run is None:
                self.stderr.write(f"{name}: already running, skipped")
                continue
            scps = "SCPs read" if run.scps_evaluated else run.scps_note or "SCPs not evaluated"
            self.stdout.write(
                f"{run.account_id}: {run.users} users, {run.groups} groups, {run.roles} roles, "
                f"{run.policies} policies in {run.pages} page(s), {run.changes} changed; {scps}"
            )
        if failures:
            raise CommandError(f"{failures} account(s) failed")
