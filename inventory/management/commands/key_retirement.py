from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from inventory import retirement, selectors


class Command(BaseCommand):
    help = '"Safe to delete?" for every customer managed key (or one): its verdict and the evidence for it.'

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["json"], default="json")
        parser.add_argument("--key", default="", help="One key: ARN (or key id, alias name, alias ARN).")

    def handle(self, *args, format="json", key="", **options):
        keys = None
        if key:
            found = selectors.resolve_key(key)
            if found is None:
                raise CommandError(f"No key {key!r} in the inventory.")
            if not found.customer_managed:
                raise CommandError(f"{found.arn} is an AWS managed key: AWS deletes it, not its owner.")
            keys = [found]
        rows = [v.as_dict() for v in retirement.verdicts(keys)]
        self.stdout.write(json.dumps({"keys": rows}, indent=2, sort_keys=True))
