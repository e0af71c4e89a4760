"""Key and principal lookups on events: exact on every backend, served by the hash indexes on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Q

from audits.models import Event
from tests.audits.support import index_copies

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
KEY_A = "arn:aws:kms:us-east-1:111122223333:key/aaaaaaaa-0000-0000-0000-000000000000"
KEY_B = "arn:aws:kms:us-east-1:111122223333:key/bbbbbbbb-0000-0000-0000-000000000000"
ROLE = "arn:aws:iam::111122223333:role/app"

pytestmark = pytest.mark.django_db


def event(n: int, key: str, principal: str = ROLE) -> Event:
    return Event.objects.create(
        recipient_account_id="111122223333",
        event_id=f"e{n}",
        event_time=T0 + timedelta(minutes=n),
        event_name="Decrypt",
        region="us-east-1",
        key=key,
        principal=principal,
    )


def test_equality_lookups_on_key_and_principal_return_exactly_the_matching_events():
    a1, b1, none, a2 = event(1, KEY_A), event(2, KEY_B, "AWS Internal"), event(3, ""), event(4, KEY_A)

    assert set(Event.objects.filter(key=KEY_A)) == {a1, a2}
    assert set(Event.objects.filter(key="")) == {none}
    assert set(Event.objects.exclude(key=KEY_A)) == {b1, none}
    assert set(Event.objects.filter(Q(key=KEY_B) | Q(key=""))) == {b1, none}
    assert set(Event.objects.filter(principal="AWS Internal")) == {b1}
    assert set(Event.objects.filter(key=KEY_A.upper())) == set()  # ARNs compare exactly, case included
    assert Event.objects.filter(key=KEY_A).update(key=KEY_B) == 2
    assert set(Event.objects.filter(key=KEY_B)) == {a1, b1, a2}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="hash indexes are PostgreSQL's")
@pytest.mark.parametrize(("field", "index"), [("key", "event_key_time"), ("principal", "event_principal_time")])
def test_the_newest_events_of_one_key_or_principal_are_read_through_its_hash_index(field, index):
    for n in range(30):
        event(n, KEY_A if n % 2 else KEY_B)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        plan = Event.objects.filter(**{field: KEY_A if field == "key" else ROLE}).order_by("-event_time")[:50].explain()
    # Without hashtext() in the lookup no plan could use these indexes, whatever the settings.
    assert any(copy in plan for copy in index_copies(index)) and "hashtext" in plan


@pytest.mark.skipif(connection.vendor != "postgresql", reason="hash indexes are PostgreSQL's")
def test_rollups_filtered_by_principal_are_read_through_its_hash_index():
    from audits.filters import EventFilter
    from audits.ingest import ingest_records, start_run
    from audits.synthetic import generate_records

    ingest_records(list(generate_records(200, seed=3, start=T0, days=3)), run=start_run("files"))
    principal = Event.objects.values_list("principal", flat=True).first()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = EventFilter(principal=principal).rollups().explain()
    assert "rollup_principal_day" in plan
