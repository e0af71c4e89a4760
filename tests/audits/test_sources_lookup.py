"""LookupEvents ingestion against the emulator over real HTTP: windows, checkpoint, pacing, faults."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Sum

from audits.models import Checkpoint, DailyRollup, Event, IngestRun, Source
from audits.services import run_scope
from audits.sources.lookup import Throttled, WindowFailed
from audits.synthetic import identity_role, identity_service, kms_record
from kmsdash.locks import run_lock

pytestmark = [pytest.mark.emulator, pytest.mark.django_db]

ACCOUNT = "123456789012"  # the emulator's default account: no role to assume
REGION = "us-east-1"
TARGET = "CloudTrail_20131101.LookupEvents"


@pytest.fixture(autouse=True)
def _lookup_settings(settings, tmp_path):
    settings.KMSDASH_LOCK_DIR = tmp_path / "locks"
    settings.KMSDASH_LOOKUP_OVERLAP_MINUTES = 15
    settings.KMSDASH_LOOKUP_SETTLE_MINUTES = 0
    settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES = 48 * 60
    settings.KMSDASH_LOOKUP_INITIAL_DAYS = 1
    return settings


@pytest.fixture
def source(db):
    return Source.objects.create(account_id=ACCOUNT, regions=[REGION, "eu-west-1"])


def now():
    return datetime.now(UTC).replace(microsecond=0)


def make_records(n, *, end, spacing=timedelta(seconds=20), account=ACCOUNT, region=REGION, offset=0):
    """n records, newest at `end`, with a few keys, operations and principals."""
    out = []
    for i in range(n):
        j = i + offset
        key = f"arn:aws:kms:{region}:{account}:key/{j % 3:08d}-0000-4000-8000-000000000000"
        identity = identity_service("s3.amazonaws.com") if j % 5 == 0 else identity_role(account, "app", f"s{j % 4}")
        out.append(
            kms_record(
                event_name=("Decrypt", "Encrypt", "GenerateDataKey")[j % 3],
                event_time=end - i * spacing,
                key_arn=key,
                identity=identity,
                region=region,
                recipient_account_id=account,
            )
        )
    return out


def expected_by_day_and_operation(records):
    return Counter((r["eventTime"][:10], r["eventName"]) for r in records)


def stored_by_day_and_operation():
    rows = DailyRollup.objects.values("day", "operation").annotate(n=Sum("count"))
    return Counter({(row["day"].isoformat(), row["operation"]): row["n"] for row in rows if row["n"]})


def feed(aws, records):
    aws.control("cloudtrail/events", {"records": records})


def rate_throttled(aws) -> int:
    """Calls the emulator refused for AWS's 2/s limit (not injected faults). On a loaded machine a
    call can reach it late enough to bunch with the next one, as it could reach AWS; botocore then
    retries it, so each such refusal is one extra call."""
    return aws.control("cloudtrail/throttled").get(f"{ACCOUNT}/{REGION}", 0)


def max_calls_in_any_second(requests):
    times = sorted(r["time"] for r in requests)
    return max((sum(1 for t in times if start <= t < start + 1.0) for start in times), default=0)


def test_a_window_of_260_events_is_read_over_six_pages(aws, source):
    fed = make_records(260, end=now() - timedelta(minutes=1))
    feed(aws, fed)

    result = run_scope("lookup", ACCOUNT, REGION)

    assert result.status == "done"
    assert Event.objects.count() == 260
    assert stored_by_day_and_operation() == expected_by_day_and_operation(fed)
    run = IngestRun.objects.get(kind="lookup")
    assert (run.status, run.pages, run.records_read, run.events_new) == ("succeeded", 6, 260, 260)
    assert Checkpoint.objects.get(kind="lookup", account_id=ACCOUNT, region=REGION).high_watermark == run.window_end
    calls = aws.requests(TARGET)
    assert len(calls) - rate_throttled(aws) == 6
    assert max_calls_in_any_second(calls) <= 2 + rate_throttled(aws)


def test_events_of_other_regions_and_event_sources_are_not_read(aws, source):
    feed(aws, make_records(5, end=now()) + make_records(7, end=now(), region="eu-west-1", offset=100))

    run_scope("lookup", ACCOUNT, REGION)

    assert Event.objects.count() == 5
    assert set(Event.objects.values_list("region", flat=True)) == {REGION}
    assert {c["region"] for c in aws.requests(TARGET)} == {REGION}


def test_a_malformed_record_is_quarantined_and_the_window_still_completes(aws, source):
    fed = make_records(4, end=now())
    broken = fed[1] | {"userIdentity": "not an object"}
    feed(aws, [fed[0], broken, *fed[2:]])

    run_scope("lookup", ACCOUNT, REGION)

    assert Event.objects.count() == 3
    run = IngestRun.objects.get()
    assert (run.status, run.quarantined) == ("succeeded", 1)
    quarantined = run.quarantine.get()
    assert quarantined.location == f"lookup:{ACCOUNT}:{REGION}" and "userIdentity" in quarantined.reason
    assert Checkpoint.objects.exists()


def test_throttling_is_retried_by_the_sdk_and_the_rate_stays_under_two_a_second(aws, source):
    fed = make_records(120, end=now())
    feed(aws, fed)
    aws.fault(TARGET, "ThrottlingException", count=2)

    run_scope("lookup", ACCOUNT, REGION)

    assert Event.objects.count() == 120
    calls = aws.requests(TARGET)
    assert len(calls) - rate_throttled(aws) == 3 + 2
    assert max_calls_in_any_second(calls) <= 2 + rate_throttled(aws)


def test_throttling_that_outlasts_the_retries_fails_the_window_and_keeps_the_checkpoint(aws, source):
    feed(aws, make_records(10, end=now()))
    aws.fault(TARGET, "ThrottlingException", count=50)

    with pytest.raises(Throttled):
        run_scope("lookup", ACCOUNT, REGION)

    run = IngestRun.objects.get(kind="lookup")
    assert run.status == "failed" and "ThrottlingException" in run.error
    assert not Checkpoint.objects.exists()
    assert len(aws.requests(TARGET)) == 5  # total_max_attempts, then give up


def test_access_denied_is_not_retried(aws, source):
    aws.fault(TARGET, "AccessDeniedException", count=5)

    with pytest.raises(WindowFailed) as excinfo:
        run_scope("lookup", ACCOUNT, REGION)

    assert not isinstance(excinfo.value, Throttled)
    assert len(aws.requests(TARGET)) == 1
    assert not Checkpoint.objects.exists()


def test_overlapping_windows_never_double_count(aws, source):
    fed = make_records(80, end=now(), spacing=timedelta(seconds=5))  # all inside the 15-minute overlap
    feed(aws, fed)
    run_scope("lookup", ACCOUNT, REGION)
    first_end = Checkpoint.objects.get().high_watermark

    run_scope("lookup", ACCOUNT, REGION)

    second = IngestRun.objects.order_by("-id").first()
    assert second.window_start == first_end - timedelta(minutes=15)
    assert (second.events_new, second.duplicates) == (0, 80)
    assert Event.objects.count() == 80
    assert stored_by_day_and_operation() == expected_by_day_and_operation(fed)


def test_an_event_arriving_late_inside_the_overlap_is_picked_up(aws, source):
    feed(aws, make_records(3, end=now()))
    run_scope("lookup", ACCOUNT, REGION)
    checkpoint = Checkpoint.objects.get().high_watermark
    late = make_records(1, end=checkpoint - timedelta(minutes=10), offset=7)
    feed(aws, late)

    run_scope("lookup", ACCOUNT, REGION)

    assert Event.objects.filter(event_id=late[0]["eventID"]).exists()
    assert Event.objects.count() == 4


def test_an_invalid_next_token_restarts_the_window(aws, source):
    fed = make_records(120, end=now())
    feed(aws, fed)
    aws.control("cloudtrail/invalidate-tokens", {"count": 1})

    run_scope("lookup", ACCOUNT, REGION)

    assert Event.objects.count() == 120
    run = IngestRun.objects.get()
    assert run.status == "succeeded"
    assert (run.events_new, run.duplicates) == (120, 50)  # page 1 read twice
    assert len(aws.requests(TARGET)) - rate_throttled(aws) == 2 + 3


def test_invalid_next_tokens_without_end_fail_the_window_after_a_few_restarts(aws, source):
    feed(aws, make_records(120, end=now()))
    aws.control("cloudtrail/invalidate-tokens", {"count": 1000})

    with pytest.raises(WindowFailed, match="InvalidNextTokenException"):
        run_scope("lookup", ACCOUNT, REGION)

    assert len(aws.requests(TARGET)) - rate_throttled(aws) == 2 * 4  # the first try and three restarts, two calls each
    assert IngestRun.objects.get().status == "failed"
    assert not Checkpoint.objects.exists()


def test_the_checkpoint_does_not_move_on_failure_and_the_next_run_catches_up(aws, source):
    feed(aws, make_records(5, end=now()))
    run_scope("lookup", ACCOUNT, REGION)
    before = Checkpoint.objects.get().high_watermark
    later = make_records(60, end=now(), spacing=timedelta(seconds=1), offset=50)
    feed(aws, later)
    aws.control("cloudtrail/invalidate-tokens", {"count": 1000})

    with pytest.raises(WindowFailed):
        run_scope("lookup", ACCOUNT, REGION)
    assert Checkpoint.objects.get().high_watermark == before

    aws.control("cloudtrail/invalidate-tokens", {"count": 0})
    run_scope("lookup", ACCOUNT, REGION)
    assert Event.objects.count() == 65
    assert Checkpoint.objects.get().high_watermark > before


def test_catching_up_reads_several_contiguous_windows_in_one_run(aws, source, settings):
    settings.KMSDASH_LOOKUP_MAX_WINDOW_MINUTES = 6 * 60
    end = now()
    fed = make_records(48, end=end - timedelta(minutes=1), spacing=timedelta(minutes=29))  # ~23 hours
    feed(aws, fed)

    result = run_scope("lookup", ACCOUNT, REGION)

    runs = list(IngestRun.objects.order_by("window_start"))
    assert result.runs == len(runs) == 5  # 24 h in 6 h windows that each re-read 15 minutes
    for previous, current in zip(runs, runs[1:], strict=False):
        assert current.window_start == previous.window_end - timedelta(minutes=15)
    assert all(run.status == "succeeded" for run in runs)
    assert Checkpoint.objects.get().high_watermark == runs[-1].window_end
    assert Event.objects.count() == 48
    assert stored_by_day_and_operation() == expected_by_day_and_operation(fed)


def test_since_and_until_read_that_range_and_never_move_the_checkpoint_back(aws, source):
    feed(aws, make_records(4, end=now()))
    run_scope("lookup", ACCOUNT, REGION)
    checkpoint = Checkpoint.objects.get().high_watermark
    old = make_records(3, end=now() - timedelta(days=3), offset=20)
    feed(aws, old)

    result = run_scope("lookup", ACCOUNT, REGION, since=now() - timedelta(days=4), until=now() - timedelta(days=2))

    assert result.runs == 1
    assert Event.objects.count() == 7
    assert Checkpoint.objects.get().high_watermark == checkpoint


def test_a_source_with_a_role_is_read_through_assume_role_in_its_own_account(aws, db):
    Source.objects.create(
        account_id="111122223333",
        regions=[REGION],
        role_arn="arn:aws:iam::111122223333:role/kmsdash-reader",
        external_id="ext-123",
    )
    feed(aws, make_records(6, end=now(), account="111122223333") + make_records(4, end=now(), offset=30))

    run_scope("lookup", "111122223333", REGION)

    assert Event.objects.count() == 6
    assert set(Event.objects.values_list("recipient_account_id", flat=True)) == {"111122223333"}
    assert {c["account"] for c in aws.requests(TARGET)} == {"111122223333"}


def test_a_scope_whose_lock_is_held_is_skipped_without_calling_aws(aws, source):
    feed(aws, make_records(3, end=now()))

    with run_lock(f"lookup:{ACCOUNT}:{REGION}") as held:
        assert held
        result = run_scope("lookup", ACCOUNT, REGION)

    assert result.status == "skipped"
    assert aws.requests(TARGET) == []
    assert not IngestRun.objects.exists()


def test_a_run_left_running_by_a_dead_worker_is_closed_by_the_next_one(aws, source):
    stale = IngestRun.objects.create(kind="lookup", account_id=ACCOUNT, region=REGION)

    run_scope("lookup", ACCOUNT, REGION)

    stale.refresh_from_db()
    assert stale.status == "failed" and "Interrupted" in stale.error


def test_an_unknown_or_disabled_scope_does_nothing(aws, source):
    Source.objects.filter(pk=source.pk).update(lookup_enabled=False)

    assert run_scope("lookup", ACCOUNT, REGION).status == "missing"
    assert run_scope("lookup", "999999999999", REGION).status == "missing"
    assert aws.requests(TARGET) == []
