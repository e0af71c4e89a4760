"""add_alert_channel: idempotent like add_source, and strict about what it is given."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from notify.models import Channel

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("add_alert_channel", *args, stdout=out)
    return out.getvalue()


def test_the_same_arguments_twice_change_nothing_and_different_ones_update():
    args = (
        "ops",
        "--webhook",
        "https://hooks.example.com/kms",
        "--kinds",
        "volume-spike,critical-event",
        "--min-severity",
        "high",
        "--secret-env",
        "OPS_HOOK_SECRET",
    )
    assert run(*args) == "Created webhook channel ops.\n"
    first = Channel.objects.get()
    assert (first.kinds, first.min_severity, first.secret_env) == (
        ["critical-event", "volume-spike"],
        "high",
        "OPS_HOOK_SECRET",
    )
    assert run(*args) == "Unchanged webhook channel ops.\n"
    assert Channel.objects.get().updated_at == first.updated_at

    assert run("ops", "--email", "sec@example.com,soc@example.com") == "Updated email channel ops.\n"
    channel = Channel.objects.get()
    # Options left out go back to their defaults: every kind, every severity, no secret.
    assert (channel.type, channel.target, channel.kinds, channel.min_severity, channel.secret_env) == (
        "email",
        "sec@example.com,soc@example.com",
        [],
        "",
        "",
    )
    assert Channel.objects.count() == 1


def test_an_apprise_url_can_live_in_an_environment_variable():
    assert run("chat", "--apprise", "--secret-env", "SLACK_URL") == "Created apprise channel chat.\n"
    channel = Channel.objects.get()
    assert (channel.target, channel.secret_env, channel.is_sealed) == ("", "SLACK_URL", False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("x", "--webhook", "ftp://example.com/"), "http or https"),
        (("x", "--webhook", "https://example.com/"), "KMSDASH_SECRETS_KMS_KEY"),
        (("x", "--email", "not-an-address"), "Not an email address"),
        (("x", "--sns-topic", "arn:aws:sqs:us-east-1:123456789012:q"), "SNS topic"),
        (("x", "--apprise", "nosuchservice://abc"), "does not recognise"),
        (("x", "--apprise"), "apprise URL"),
        (("x", "--email", "a@example.com", "--secret-env", "X"), "Only webhook and apprise"),
        (("x", "--webhook", "https://example.com/", "--secret-env", "BAD-NAME"), "letters, digits"),
    ],
)
def test_bad_arguments_are_refused_and_nothing_is_written(settings, args, message):
    settings.KMSDASH_SECRETS_KMS_KEY = ""
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not Channel.objects.exists()


def test_an_unknown_severity_is_refused_by_the_parser():
    with pytest.raises(CommandError):
        run("x", "--email", "a@example.com", "--min-severity", "severe")
