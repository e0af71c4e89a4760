"""Create or update a kmsdash user and set its roles: safe to run again with new roles or a new password."""

from __future__ import annotations

import getpass
import os

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from kmsdash.roles import ADMIN, ROLES


class Command(BaseCommand):
    help = "Create or update a user with its roles (analyst, finance, admin). Re-running sets roles and password."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--role",
            dest="roles",
            action="append",
            choices=ROLES,
            required=True,
            help="A role to hold; repeat for several. Roles not given are taken away.",
        )
        parser.add_argument(
            "--password-env",
            metavar="VAR",
            help="Read the password from this environment variable instead of prompting (at least 12 characters).",
        )
        parser.add_argument(
            "--skip-validation",
            action="store_true",
            help="Accept a password that fails the password validators (for the local demo only).",
        )

    def handle(
        self, *args, username: str, roles: list[str], password_env: str | None, skip_validation: bool, **options
    ) -> None:
        roles = sorted(set(roles))
        password = self._password(password_env)
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
            created = user is None
            if user is None:
                user = User(**{User.USERNAME_FIELD: username})
            if not skip_validation:
                try:
                    validate_password(password, user)
                except ValidationError as exc:
                    raise CommandError("Password refused: " + " ".join(exc.messages)) from exc
            user.set_password(password)
            user.is_active = True
            # The Django admin (sources, users, the export audit) is the admin role's; nobody else is staff.
            user.is_staff = user.is_superuser = ADMIN in roles
            user.save()
            held = user.groups.filter(name__in=ROLES)
            user.groups.remove(*held.exclude(name__in=roles))
            user.groups.add(*(Group.objects.get_or_create(name=role)[0] for role in roles))
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} user {username} with roles: {', '.join(roles)}")

    def _password(self, password_env: str | None) -> str:
        if password_env:
            password = os.environ.get(password_env, "")
            if not password:
                raise CommandError(f"The environment variable {password_env} is unset or empty.")
            return password
        password = getpass.getpass("Password: ")
        if not password:
            raise CommandError("An empty password is not allowed.")
        if getpass.getpass("Password (again): ") != password:
            raise CommandError("The passwords didn't match.")
        return password
