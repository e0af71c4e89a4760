"""The unique keys that deduplicate events and merge rollup rows (audits.fields.UniqueKey)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from audits.ingest import ingest_records, start_run
from audits.models import DailyRollup, Event
from audits.synthetic import identity_role, identity_service, kms_record

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

pytestmark = pytest.mark.django_db


def decrypt(n: int, role: str, service: str | None) -> dict:
    return kms_record(
        event_name="Decrypt",
        event_time=T0 + timedelta(minutes=n),
        key_arn=KEY,
        identity=identity_role(ACCOUNT, role, "s1", invoked_by=service),
        region="us-east-1",
        recipient_account_id=ACCOUNT,
        event_id=f"00000000-0000-4000-8000-{n:012d}",
    )


def test_rollup_rows_whose_dimensions_join_into_the_same_text_stay_apart_and_re_runs_merge_into_them():
    # principal + service read the same once joined: ".../role/app" + "s3.amazonaws.com" and
    # ".../role/apps3.amazonaws.com" + "". A key built by plain concatenation would merge them.
    records = [decrypt(1, "app", "s3.amazonaws.com"), decrypt(2, "apps3.amazonaws.com", None)]
    for _ in range(2):
        ingest_records(records, run=start_run("files"))

    rows = DailyRollup.objects.order_by("principal").values_list("principal", "service", "count")
    assert list(rows) == [
        (f"arn:aws:iam::{ACCOUNT}:role/app", "s3.amazonaws.com", 1),
        (f"arn:aws:iam::{ACCOUNT}:role/apps3.amazonaws.com", "", 1),
    ]
    assert Event.objects.count() == 2


def test_rollup_rows_of_texts_that_differ_only_in_backslash_escapes_stay_apart():
    # On PostgreSQL the key hashes the bytes of the text: a backslash must not read as an escape,
    # or "svc\\101" and "\\163vcA" (octal escapes for "A" and "s", same length) would both be "svcA".
    services = ["svc\\101", "\\163vcA", "svcA", "svc\\\\"]
    records = [
        kms_record(
            event_name="Decrypt",
            event_time=T0 + timedelta(minutes=n),
            key_arn=KEY,
            identity=identity_service(service),
            region="us-east-1",
            recipient_account_id=ACCOUNT,
            event_id=f"00000000-0000-4000-8000-{n:012d}",
        )
        for n, service in enumerate(services)
    ]
    for _ in range(2):
        ingest_records(records, run=start_run("files"))

    assert sorted(DailyRollup.objects.values_list("principal", "count")) == sorted((s, 1) for s in services)


def test_a_second_rollup_row_with_the_same_dimensions_fails_validation_and_another_day_passes():
    dims = dict(
        day=date(2026, 3, 2),
        account_id=ACCOUNT,
        region="us-east-1",
        key=KEY,
        operation="Decrypt",
        principal="p",
        service="",
        error_code="",
        after_hours=False,
    )
    DailyRollup.objects.create(**dims, count=1, first_seen=T0, last_seen=T0)

    with pytest.raises(ValidationError):
        DailyRollup(**dims, count=1, first_seen=T0, last_seen=T0).validate_constraints()
    DailyRollup(**{**dims, "day": date(2026, 3, 3)}, count=1, first_seen=T0, last_seen=T0).validate_constraints()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the hashed keys are PostgreSQL's")
@pytest.mark.parametrize("index", ["event_unique_per_account", "rollup_unique_dims"])
def test_on_postgresql_the_unique_indexes_hold_16_bytes_of_a_sha256_of_their_columns(index):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(i.indexrelid), i.indisunique, a.atttypid::regtype::text "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_attribute a ON a.attrelid = i.indexrelid AND a.attnum = 1 WHERE c.relname = %s",
            [index],
        )
        ((definition, unique, stored_type),) = cursor.fetchall()
    assert unique and stored_type == "uuid" and "sha256(" in definition
