"""The demo world's month, ingested and judged once as on the demo's first start: an alert for
each of its incidents, none for its look-alikes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from alerts.models import Alert, Kind
from alerts.services import evaluate
from audits.ingest import ingest_records, start_run
from audits.models import IngestRun
from demo.activity import generate_activity, placeholder_keys

pytestmark = pytest.mark.django_db

END = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


def test_the_demo_month_alerts_for_its_incidents_and_not_for_its_look_alikes():
    keys = placeholder_keys()
    by_alias = {key.spec.alias: key for key in keys}
    month = generate_activity(keys, end=END, days=30, events_per_day=1000, seed=2026)
    ingest_records(month, run=start_run(IngestRun.Kind.FILES))
    assert evaluate().status == "done"
    alerts = list(Alert.objects.all())
    kinds = {a.kind for a in alerts}
    assert {
        Kind.CRITICAL_EVENT,
        Kind.KEY_EXPOSED,
        Kind.FAILURE_BURST,
        Kind.AFTER_HOURS_UNUSUAL,
        Kind.NEW_PRINCIPAL,
        Kind.VOLUME_SPIKE,
    } <= kinds
    spikes = [a for a in alerts if a.kind == Kind.VOLUME_SPIKE]
    # The replay two days ago and the sessions table's cache flush (the capacity story); the steady
    # busy keys and the month's smaller bursts stay silent.
    assert sorted((a.key, a.first_event.hour) for a in spikes) == sorted(
        [(by_alias["prod-orders-dynamodb"].arn, 13), (by_alias["prod-eu-sessions"].arn, 16)]
    )
    exposed = [a for a in alerts if a.kind == Kind.KEY_EXPOSED]
    assert [a.key for a in exposed] == [by_alias["data-warehouse"].arn]
    assert not [a for a in alerts if a.key == by_alias["data-eu-lake-s3"].arn and a.kind == Kind.KEY_EXPOSED]
    night = {(a.key, a.principal) for a in alerts if a.kind == Kind.AFTER_HOURS_UNUSUAL}
    assert (by_alias["prod-orders-dynamodb"].arn, "arn:aws:iam::111122223333:user/bob.sre") in night
    # The nightly report job's after-hours calls are its habit, not unusual.
    assert not [p for _, p in night if p.endswith("role/report-builder")]
    assert "arn:aws:iam::777788889999:role/vendor-sync" in {a.principal for a in alerts if a.kind == Kind.NEW_PRINCIPAL}
    assert ("arn:aws:iam::111122223333:user/bob.sre", "AccessDeniedException") in {
        (a.principal, a.error_code) for a in alerts if a.kind == Kind.FAILURE_BURST
    }
    # The routine EBS grants never alert.
    assert not [a for a in alerts if a.subject in ("RetireGrant", "CreateGrant")]
