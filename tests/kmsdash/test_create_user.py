from __future__ import annotations

import getpass

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.django_db

STRONG = "correct-horse-battery-staple-42"


def password_works(username: str, password: str) -> bool:
    return get_user_model().objects.get(username=username).check_password(password)


def roles_of(username: str) -> set[str]:
    user = get_user_model().objects.get(username=username)
    return set(user.groups.values_list("name", flat=True))


def create(username: str, *roles: str, password_env: str = "KMSDASH_TEST_PASSWORD", **options) -> None:
    args = [username]
    for role in roles:
        args += ["--role", role]
    call_command("create_user", *args, password_env=password_env, **options)


def test_a_new_user_gets_the_roles_and_can_log_in_with_the_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("KMSDASH_TEST_PASSWORD", STRONG)
    create("alice", "analyst", "finance")
    assert roles_of("alice") == {"analyst", "finance"}
    user = get_user_model().objects.get(username="alice")
    assert not user.is_staff and not user.is_superuser
    assert password_works("alice", STRONG)


def test_running_it_again_replaces_roles_and_password_without_a_second_user(monkeypatch):
    monkeypatch.setenv("KMSDASH_TEST_PASSWORD", STRONG)
    create("bob", "admin")
    assert get_user_model().objects.get(username="bob").is_staff
    monkeypatch.setenv("KMSDASH_TEST_PASSWORD", STRONG + "-rotated")
    create("bob", "finance")
    assert get_user_model().objects.filter(username="bob").count() == 1
    assert roles_of("bob") == {"finance"}
    user = get_user_model().objects.get(username="bob")
    assert not user.is_staff and not user.is_superuser
    assert not password_works("bob", STRONG)
    assert password_works("bob", STRONG + "-rotated")


def test_groups_that_are_not_roles_are_left_alone(monkeypatch):
    from django.contrib.auth.models import Group

    monkeypatch.setenv("KMSDASH_TEST_PASSWORD", STRONG)
    create("carol", "analyst")
    user = get_user_model().objects.get(username="carol")
    user.groups.add(Group.objects.create(name="on-call"))
    create("carol", "finance")
    assert roles_of("carol") == {"finance", "on-call"}


def test_the_admin_role_makes_the_django_admin_usable(client, monkeypatch):
    monkeypatch.setenv("KMSDASH_TEST_PASSWORD", STRONG)
    create("dora", "admin")
    response = client.post("/accounts/login/", {"username": "dora", "password": STRONG})
    assert response.status_code == 302
    response = client.get("/admin/")
    assert response.status_code == 200
    assert b"Export audits" in response.content


def test_a_weak_password_is_refused_unless_validation_is_skipped(monkeypatch):
    monkeypatch.setenv("KMSDASH_TEST_PASSWORD", "password")
    with pytest.raises(CommandError, match="Password refused"):
        create("erin", "analyst")
    assert not get_user_model().objects.filter(username="erin").exists()
    create("erin", "analyst", skip_validation=True)
    assert password_works("erin", "password")


def test_a_password_similar_to_the_username_is_refused(monkeypatch):
    monkeypatch.setenv("KMSDASH_TEST_PASSWORD", "francesca-the-analyst")
    with pytest.raises(CommandError, match="too similar"):
        create("francesca-the-analyst", "analyst")


def test_an_unset_password_variable_is_an_error_not_an_empty_password(monkeypatch):
    monkeypatch.delenv("KMSDASH_NOT_SET", raising=False)
    with pytest.raises(CommandError, match="KMSDASH_NOT_SET"):
        create("gina", "analyst", password_env="KMSDASH_NOT_SET")
    assert not get_user_model().objects.filter(username="gina").exists()


def test_an_unknown_role_is_refused():
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("create_user", "hal", "--role", "superuser", password_env="X")


def test_without_a_password_variable_it_prompts_twice_and_they_must_match(monkeypatch):
    answers = iter([STRONG, STRONG])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    call_command("create_user", "ivy", "--role", "analyst")
    assert password_works("ivy", STRONG)

    answers = iter([STRONG, STRONG + "x"])
    with pytest.raises(CommandError, match="didn't match"):
        call_command("create_user", "jack", "--role", "analyst")
    assert not get_user_model().objects.filter(username="jack").exists()


def test_a_password_needs_twelve_characters(monkeypatch):
    monkeypatch.setenv("KMSDASH_TEST_PASSWORD", "violet-lam7")  # 11 characters
    with pytest.raises(CommandError, match="at least 12 characters"):
        create("kim", "analyst")
    assert not get_user_model().objects.filter(username="kim").exists()
    monkeypatch.setenv("KMSDASH_TEST_PASSWORD", "violet-lamp7")  # 12
    create("kim", "analyst")
    assert password_works("kim", "violet-lamp7")
