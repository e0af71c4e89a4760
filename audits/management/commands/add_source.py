"""Register (or update) an AWS account to watch. Re-running with the same arguments changes nothing."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from audits.services import upsert_source


class Command(BaseCommand):
    help = (
        "Create or update the source for an AWS account: the row ends up exactly as described, so "
        "options left out go back to their defaults. Credentials come from the standard AWS chain."
    )

    def add_arguments(self, parser):
        parser.add_argument("--account-id", required=True, help="12-digit AWS account id.")
        parser.add_argument("--regions", required=True, help="Comma-separated regions, e.g. us-east-1,eu-west-1.")
        parser.add_argument("--name", default="", help="A display name.")
        parser.add_argument("--role-arn", default="", help="Role to assume into the account (optional).")
        parser.add_argument("--external-id", default="", help="ExternalId the role's trust policy requires.")
        parser.add_argument("--s3-bucket", default="", help="Bucket of the CloudTrail trail's log files.")
        parser.add_argument("--s3-prefix", default="", help="Key prefix the trail writes under, if any.")
        parser.add_argument("--org-id", default="", help="Organization id (o-...) for an organization trail.")
        parser.add_argument("--no-lookup", action="store_true", help="Do not read CloudTrail LookupEvents.")

    def handle(self, *args, **options):
        try:
            source, created = upsert_source(
                account_id=options["account_id"].strip(),
                regions=options["regions"].split(","),
                name=options["name"],
                role_arn=options["role_arn"],
                external_id=options["external_id"],
                s3_bucket=options["s3_bucket"],
                s3_prefix=options["s3_prefix"],
                org_id=options["org_id"],
                lookup_enabled=not options["no_lookup"],
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} source {source.account_id} ({', '.join(source.regions)}).")
