from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audits.models import Source
from inventory import findings, services


class Command(BaseCommand):
    help = (
        "Read the KMS key inventory (keys, aliases, policies, grants, tags, trails) and the resources that "
        "name each key, then recompute findings."
    )

    def add_arguments(self, parser):
        parser.add_argument("--account-id", help="Only this configured account.")
        parser.add_argument("--region", help="Only this region (required when no account is configured).")

    def handle(self, *args, account_id=None, region=None, **options):
        scopes: list[tuple[Source | None, str]] = list(
            Source.objects.regions(account_id=account_id, region=region or None)
        )
        if not Source.objects.exists():
            # No account configured: the default credential chain's own account.
            if not region:
                raise CommandError("No account is configured: give --region to read the default account.")
            scopes = [(None, region)]
        if not scopes:
            raise CommandError("Nothing to read: no enabled account/region matches.")
        failures = 0
        for source, scope_region in scopes:
            name = services.lock_name(source, scope_region)
            try:
                run = services.ingest_keys(source, scope_region)
            except Exception as exc:  # noqa: BLE001 - one scope failing does not stop the others
                failures += 1
                self.stderr.write(f"{name}: failed: {type(exc).__name__}: {exc}")
                continue
            if run is None:
                self.stderr.write(f"{name}: already running, skipped")
                continue
            self.stdout.write(
                f"{run.account_id} {run.region}: {run.keys} keys, {run.aliases} aliases, {run.grants} grants, "
                f"{run.policy_changes} policy changes, {run.state_changes} state changes, "
                f"{run.events_reattributed} events re-attributed"
            )
            if not run.account_id:
                continue  # an account without keys: no account id to read its resources under
            checks = services.refresh_references(source, scope_region, account_id=run.account_id)
            if checks is None:
                self.stderr.write(f"{run.account_id} {run.region}: references already being read, skipped")
                continue
            missed = [c.service for c in checks if c.status != "checked"]
            self.stdout.write(
                f"{run.account_id} {run.region}: references of {len(checks) - len(missed)} services read"
                + (f", not checked: {', '.join(missed)}" if missed else "")
            )
        counts = findings.recompute()
        if counts is None:
            self.stderr.write("findings: another recompute is running, skipped")
        else:
            self.stdout.write(
                f"findings: {counts['opened']} opened, {counts['held']} held, {counts['resolved']} resolved"
            )
        if failures:
            raise CommandError(f"{failures} account/region(s) failed")
