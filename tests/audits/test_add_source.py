"""`manage.py add_source`: validated, idempotent, declarative."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audits.models import Source

pytestmark = pytest.mark.django_db


def add_source(*args: str) -> str:
    out = StringIO()
    call_command("add_source", *args, stdout=out)
    return out.getvalue()


def test_a_source_is_created_with_its_regions_and_trail():
    output = add_source(
        "--account-id",
        "111122223333",
        "--regions",
        "us-east-1, eu-west-1",
        "--name",
        "Prod",
        "--role-arn",
        "arn:aws:iam::111122223333:role/kmsdash-reader",
        "--external-id",
        "ext-42",
        "--s3-bucket",
        "org-trail-logs",
        "--s3-prefix",
        "/trails/prod/",
        "--org-id",
        "o-a1b2c3d4e5",
    )

    source = Source.objects.get()
    assert "Created source 111122223333" in output
    assert source.regions == ["us-east-1", "eu-west-1"]
    assert (source.name, source.role_arn, source.external_id) == (
        "Prod",
        "arn:aws:iam::111122223333:role/kmsdash-reader",
        "ext-42",
    )
    assert (source.s3_bucket, source.s3_prefix, source.org_id) == ("org-trail-logs", "trails/prod", "o-a1b2c3d4e5")
    assert source.lookup_enabled and source.enabled


def test_running_it_again_updates_the_same_row():
    add_source(
        "--account-id", "111122223333", "--regions", "us-east-1", "--name", "Old", "--s3-bucket", "org-trail-logs"
    )
    Source.objects.update(enabled=False)

    output = add_source("--account-id", "111122223333", "--regions", "eu-west-1,us-east-1", "--name", "New")

    source = Source.objects.get()
    assert "Updated source" in output
    assert (source.name, source.regions, source.s3_bucket, source.enabled) == (
        "New",
        ["eu-west-1", "us-east-1"],
        "",
        True,
    )


def test_the_same_command_twice_leaves_the_same_state():
    args = ("--account-id", "444455556666", "--regions", "ap-southeast-2", "--no-lookup")
    add_source(*args)
    first = Source.objects.values().get()
    add_source(*args)
    second = Source.objects.values().get()
    first.pop("updated_at"), second.pop("updated_at")
    assert first == second
    assert first["lookup_enabled"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--account-id", "11112222333", "--regions", "us-east-1"), "12 digits"),
        (("--account-id", "11112222333x", "--regions", "us-east-1"), "12 digits"),
        (("--account-id", "111122223333", "--regions", "us-east-1,mars-north-1"), "mars-north-1"),
        (("--account-id", "111122223333", "--regions", "us-east-9"), "us-east-9"),
        (("--account-id", "111122223333", "--regions", " , "), "region"),
        (("--account-id", "111122223333", "--regions", "us-east-1", "--role-arn", "arn:aws:iam::1:user/x"), "role ARN"),
        (("--account-id", "111122223333", "--regions", "us-east-1", "--external-id", "abc"), "role ARN"),
        (("--account-id", "111122223333", "--regions", "us-east-1", "--s3-bucket", "Bad_Bucket"), "bucket"),
        (("--account-id", "111122223333", "--regions", "us-east-1", "--org-id", "o-a1b2c3d4e5"), "bucket"),
        (
            (
                "--account-id",
                "111122223333",
                "--regions",
                "us-east-1",
                "--s3-bucket",
                "logs-bucket",
                "--org-id",
                "org1",
            ),
            "organization id",
        ),
    ],
)
def test_invalid_input_is_refused_and_nothing_is_written(args, message):
    with pytest.raises(CommandError, match=message):
        add_source(*args)
    assert not Source.objects.exists()
