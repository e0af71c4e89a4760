"""Create or update an alert channel. Re-running with the same arguments changes nothing."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from notify.models import SEVERITIES, Channel
from notify.services import upsert_channel


class Command(BaseCommand):
    help = (
        "Create or update the alert channel NAME: the row ends up exactly as described, so options left "
        "out go back to their defaults. A webhook without --secret-env gets a signing secret, printed "
        "once and stored encrypted with KMSDASH_SECRETS_KMS_KEY; an apprise URL is stored encrypted too, "
        "unless --secret-env names the variable holding it (then give --apprise without a URL)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--webhook", metavar="URL", help="POST signed JSON to this http(s) URL.")
        where.add_argument("--email", metavar="ADDRESS[,ADDRESS]", help="Email these addresses.")
        where.add_argument("--sns-topic", metavar="ARN", help="Publish to this Amazon SNS topic.")
        where.add_argument(
            "--apprise",
            metavar="URL",
            nargs="?",
            const="",
            help="Chat or paging through this apprise URL (slack://, msteams://, pagerduty://, ...).",
        )
        where.add_argument("--file", metavar="PATH", help="Append what would be sent to this file (the demo).")
        parser.add_argument("--kinds", default="", help="Comma-separated alert kinds (default: all).")
        parser.add_argument("--min-severity", default="", choices=["", *SEVERITIES], help="Lowest severity sent.")
        parser.add_argument(
            "--secret-env",
            default="",
            help="Environment variable holding the webhook signing secret or the apprise URL.",
        )
        parser.add_argument("--disabled", action="store_true", help="Create or keep the channel switched off.")

    def handle(self, *args, **options):
        options_of = {"webhook": "webhook", "email": "email", "sns": "sns_topic", "apprise": "apprise", "file": "file"}
        type_ = next(kind for kind, option in options_of.items() if options[option] is not None)
        option = options_of[type_]
        try:
            channel, verb, generated = upsert_channel(
                name=options["name"],
                type=type_,
                target="" if type_ == Channel.Type.APPRISE else options[option].strip(),
                apprise_url=options["apprise"] or "",
                kinds=options["kinds"].split(","),
                min_severity=options["min_severity"],
                secret_env=options["secret_env"].strip(),
                enabled=not options["disabled"],
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(f"{verb.capitalize()} {channel.type} channel {channel.name}.")
        if generated:
            # Shown once: only the sealed copy is kept. The receiver verifies X-Kmsdash-Signature with it.
            self.stdout.write(f"Webhook signing secret (shown only now): {generated}")
