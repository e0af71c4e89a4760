"""Shared fixtures. Each area keeps its own fixtures in its own conftest or test module."""

import pytest


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # For speed: tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
