"""Seed the AWS emulator with the demo world, register its accounts as Sources and create demo users."""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from demo.seed import NotTheEmulator, context_rules, ensure_secrets_key, register_sources, seed_world
from kmsdash.roles import ADMIN, ANALYST, FINANCE

DEMO_USERS = {"analyst": [ANALYST], "finance": [FINANCE], "admin": [ADMIN]}


class Command(BaseCommand):
    help = (
        "Fill the kmsdash AWS emulator with a month of synthetic KMS activity (20 keys, 2 accounts, "
        "3 regions), register the demo accounts as Sources and create one demo user per role. "
        "Only ever writes to the emulator given by --endpoint."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--endpoint", required=True, help="The emulator's URL, e.g. http://127.0.0.1:5055")
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument(
            "--events-per-day",
            type=float,
            default=3000,
            help="Average ordinary traffic per day over both accounts (stories come on top).",
        )
        parser.add_argument("--seed", type=int, default=2026, help="Random seed: the same seed gives the same month.")
        # CloudTrail delivers about every 5 minutes; fewer, larger files make the demo's first
        # ingestion quicker without changing what the pages show.
        parser.add_argument("--file-minutes", type=int, default=120, help="Minutes of events per CloudTrail log file.")
        parser.add_argument("--no-users", action="store_true", help="Don't create the demo users.")
        parser.add_argument(
            "--credentials-file", type=Path, help="Also write the demo users' credentials to this file (mode 600)."
        )

    def handle(
        self,
        *args,
        endpoint: str,
        days: int,
        events_per_day: float,
        seed: int,
        file_minutes: int,
        no_users: bool,
        credentials_file: Path | None,
        **options,
    ) -> None:
        if not settings.KMSDASH_DEMO:
            raise CommandError("Refusing to seed: KMSDASH_DEMO is not True, so this is not a demo installation.")
        try:
            result = seed_world(
                endpoint, days=days, events_per_day=events_per_day, seed=seed, file_minutes=file_minutes
            )
        except NotTheEmulator as exc:
            raise CommandError(str(exc)) from exc
        register_sources(result.buckets)
        if settings.KMSDASH_SECRETS_KMS_KEY.startswith("alias/"):
            ensure_secrets_key(endpoint, settings.KMSDASH_SECRETS_KMS_KEY)
        # The demo's alert channel: what would be sent, one JSON line each, in var/demo/alerts.log.
        call_command(
            "add_alert_channel", "demo-log", "--file", str(settings.VAR_DIR / "alerts.log"), stdout=io.StringIO()
        )
        rules = context_rules(result.keys)
        self.stdout.write(
            f"Seeded {len(result.keys)} keys, {result.records} CloudTrail records in {result.log_files} S3 objects, "
            f"{result.lookup_events} LookupEvents records, {result.cost_rows} Cost Explorer rows, "
            f"{rules} encryption-context rules, {len(result.buckets)} sources "
            f"({', '.join(f'{name} {seconds}s' for name, seconds in result.seconds.items())})"
        )
        if no_users:
            return
        lines = [self._user(username, roles) for username, roles in DEMO_USERS.items()]
        for line in lines:
            self.stdout.write(line)
        if credentials_file:
            credentials_file.parent.mkdir(parents=True, exist_ok=True)
            credentials_file.touch(mode=0o600)
            credentials_file.chmod(0o600)
            credentials_file.write_text("\n".join(lines) + "\n")

    def _user(self, username: str, roles: list[str]) -> str:
        password = secrets.token_urlsafe(12)
        variable = "KMSDASH_DEMO_PASSWORD"
        os.environ[variable] = password
        try:
            call_command(
                "create_user",
                username,
                *[f"--role={role}" for role in roles],
                password_env=variable,
                stdout=io.StringIO(),
            )
        finally:
            del os.environ[variable]
        return f"  {username:<8} {password:<18} roles: {', '.join(roles)}"
