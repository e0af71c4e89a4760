"""Single sign-on with OpenID Connect (mozilla-django-oidc), roles mapped from a groups claim.

Off unless KMSDASH_OIDC_ENABLED: the two URLs then answer 404. A signed-in user's roles are set
from the provider's groups claim at every login (KMSDASH_OIDC_ROLE_MAP: group -> role), so a role
taken away at the provider is gone at the next login; someone with no mapped group is refused.

Users are matched by KMSDASH_OIDC_USERNAME_CLAIM, never by e-mail, and a provider login never
takes over a local account (one with a password): a provider that lets its users choose their own
`preferred_username` must not open the local `admin`. Accounts it creates have no password.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from .roles import ADMIN, ROLES

logger = logging.getLogger(__name__)


def mapped_roles(claims: dict) -> set[str]:
    groups = claims.get(settings.KMSDASH_OIDC_GROUPS_CLAIM) or []
    if isinstance(groups, str):
        groups = [groups]
    role_map = settings.KMSDASH_OIDC_ROLE_MAP
    return {role_map[group] for group in groups if isinstance(group, str) and group in role_map}


class RoleMappingOIDCBackend(OIDCAuthenticationBackend):
    def username_of(self, claims: dict) -> str:
        value = claims.get(settings.KMSDASH_OIDC_USERNAME_CLAIM)
        return value.strip()[:150] if isinstance(value, str) else ""

    def verify_claims(self, claims: dict) -> bool:
        username = self.username_of(claims)
        if not username:
            logger.warning("Single sign-on refused: no %s claim", settings.KMSDASH_OIDC_USERNAME_CLAIM)
            return False
        if not mapped_roles(claims):
            logger.warning("Single sign-on refused for %s: no group mapped to a kmsdash role", username)
            return False
        return True

    def filter_users_by_claims(self, claims: dict):
        users = self.UserModel.objects.filter(**{self.UserModel.USERNAME_FIELD: self.username_of(claims)})
        for user in users:
            if user.has_usable_password():
                logger.warning("Single sign-on refused for %s: a local account has that name", user.get_username())
                raise SuspiciousOperation("A local account has this username")
        return users

    def create_user(self, claims: dict):
        user = self.UserModel(**{self.UserModel.USERNAME_FIELD: self.username_of(claims)})
        user.set_unusable_password()
        return self.update_user(user, claims)

    def update_user(self, user, claims: dict):
        roles = mapped_roles(claims)
        with transaction.atomic():
            user.email = claims.get("email", "") if isinstance(claims.get("email"), str) else ""
            # As create_user does: the Django admin is the admin role's.
            user.is_staff = user.is_superuser = ADMIN in roles
            user.save()
            user.groups.remove(*user.groups.filter(name__in=ROLES).exclude(name__in=roles))
            user.groups.add(*(Group.objects.get_or_create(name=role)[0] for role in roles))
        return user


def only_when_enabled(view):
    @login_not_required
    def wrapped(request: HttpRequest) -> HttpResponse:
        if not settings.KMSDASH_OIDC_ENABLED:
            raise Http404("Single sign-on is not enabled")
        return view(request)

    return wrapped


authenticate = only_when_enabled(OIDCAuthenticationRequestView.as_view())
callback = only_when_enabled(OIDCAuthenticationCallbackView.as_view())
