"""The application's logs: one JSON object a line, with each call's `extra` fields in it."""

from __future__ import annotations

import gzip
import json
import logging
import logging.config
import sys
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from django.conf import settings

from audits.models import Source
from audits.services import run_scope
from audits.synthetic import identity_role, kms_record
from tests.support import manage_py

ACCOUNT = "111122223333"
REGION = "us-east-1"
BUCKET = "org-trail-logs"


def formatter() -> logging.Formatter:
    """The formatter LOGGING configures, built the way logging.config builds it."""
    configurator = logging.config.DictConfigurator(settings.LOGGING)
    return configurator.configure_formatter(dict(settings.LOGGING["formatters"]["json"]))


def lines(records) -> list[dict]:
    text = "\n".join(formatter().format(record) for record in records)
    return [json.loads(line) for line in text.splitlines()]


def test_a_logged_line_is_one_json_object_with_the_calls_extra_fields_even_with_cr_lf_inside():
    # As a real process writes it: the settings' LOGGING on stderr.
    result = manage_py(
        "shell",
        "-v0",
        "-c",
        "import logging; logging.getLogger('kmsdash.test').warning("
        "'line\\r\\nINFO forged \\u2028 x', extra={'bucket': 'b\\nc', 'count': 3})",
    )
    assert result.returncode == 0, result.stderr
    written = [line for line in result.stderr.split("\n") if line]
    assert len(written) == 1, result.stderr
    entry = json.loads(written[0])
    assert entry["message"] == "line\r\nINFO forged \u2028 x"
    assert (entry["level"], entry["logger"], entry["bucket"], entry["count"]) == ("WARNING", "kmsdash.test", "b\nc", 3)
    assert datetime.fromisoformat(entry["time"]).tzinfo is not None
    assert written[0].isascii()  # U+2028 ends a line for some readers: it is escaped too


def test_an_exception_is_one_field_of_the_same_line():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.getLogger("kmsdash.test").makeRecord(
            "kmsdash.test", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
    [entry] = lines([record])
    assert entry["message"] == "failed" and "ValueError: bad\nvalue" in entry["exc"]


@pytest.mark.emulator
@pytest.mark.django_db
def test_a_deferred_s3_object_is_logged_with_its_bucket_key_and_error_code(aws, caplog, settings, tmp_path):
    settings.KMSDASH_LOCK_DIR = tmp_path / "locks"
    settings.KMSDASH_S3_INITIAL_DAYS = 1
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    Source.objects.create(account_id=ACCOUNT, regions=[REGION], s3_bucket=BUCKET, lookup_enabled=False)
    day = datetime.now(UTC).date()
    key = f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{day:%Y/%m/%d}/{ACCOUNT}_CloudTrail_{REGION}_20000101T0000Z_a.json.gz"
    record = kms_record(
        event_name="Decrypt",
        event_time=datetime.now(UTC) - timedelta(minutes=2),
        key_arn=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-000000000000",
        identity=identity_role(ACCOUNT, "app", "s"),
        region=REGION,
        recipient_account_id=ACCOUNT,
    )
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(json.dumps({"Records": [record]}).encode()))
    # e.g. encrypted under a KMS key the reader's role may not use
    aws.fault(key, error="AccessDenied", status=403, count=1000)

    with caplog.at_level(logging.WARNING, logger="audits.sources.s3"):
        run_scope("s3", ACCOUNT, REGION)

    deferred = [entry for entry in lines(caplog.records) if entry["message"] == "S3 object deferred"]
    assert len(deferred) == 1, [r.getMessage() for r in caplog.records]
    # botocore reports the HTTP status as the code when the error has no body to name it.
    assert (deferred[0]["bucket"], deferred[0]["key"], deferred[0]["code"]) == (BUCKET, key, "403")
