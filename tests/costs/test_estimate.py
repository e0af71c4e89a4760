"""Per-key estimates, their reconciliation with Cost Explorer, top drivers and the savings finder."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audits.ingest import ingest_records, start_run
from audits.models import DailyRollup, IngestRun, Source
from audits.synthetic import identity_role, kms_record
from costs import estimate as est
from costs import savings
from costs.models import CostRecord, UsageClass
from costs.selectors import daily_costs
from inventory.models import Key

pytestmark = pytest.mark.django_db

A, B, C = "111122223333", "444455556666", "777788889999"
KEY1 = f"arn:aws:kms:us-east-1:{A}:key/11111111-1111-1111-1111-111111111111"
KEY2 = f"arn:aws:kms:us-east-1:{A}:key/22222222-2222-2222-2222-222222222222"
RSA = f"arn:aws:kms:eu-west-1:{A}:key/33333333-3333-3333-3333-333333333333"
UNKNOWN = f"arn:aws:kms:us-east-1:{B}:key/44444444-4444-4444-4444-444444444444"
ROLE = f"arn:aws:iam::{A}:role/app"
SYMMETRIC = Decimal("0.000003")
LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)


def q(value: Decimal) -> Decimal:
    # Prorated key-months are thirds and the like: compare them well below a cent.
    return value.quantize(Decimal("1e-12"))


def rollup(
    day, key, count, *, account=A, region="us-east-1", operation="Decrypt", principal=ROLE, service="", error_code=""
):
    when = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    return DailyRollup.objects.create(
        day=day,
        account_id=account,
        region=region,
        key=key,
        operation=operation,
        principal=principal,
        service=service,
        error_code=error_code,
        after_hours=False,
        count=count,
        first_seen=when,
        last_seen=when,
    )


def key(
    arn,
    *,
    spec="SYMMETRIC_DEFAULT",
    manager="CUSTOMER",
    state="Enabled",
    created=LONG_AGO,
    rotations=0,
    last_used_at=None,
    multi_region_type="",
):
    _, _, _, region, account, rest = arn.split(":", 5)
    return Key.objects.create(
        arn=arn,
        key_id=rest.split("/", 1)[1],
        account_id=account,
        region=region,
        key_manager=manager,
        key_spec=spec,
        key_state=state,
        creation_date=created,
        rotations=rotations,
        last_used_at=last_used_at,
        multi_region=bool(multi_region_type),
        multi_region_type=multi_region_type,
        last_seen_at=timezone.now(),
    )


def actual(day, account, usage_type, amount, estimated=True):
    kind = UsageClass.KEY_MONTHS if usage_type.endswith("Keys") else UsageClass.SYMMETRIC
    CostRecord.objects.create(
        day=day,
        account_id=account,
        usage_type=usage_type,
        usage_class=kind,
        region="us-east-1",
        metric="UnblendedCost",
        amount=Decimal(amount),
        estimated=estimated,
        fetched_at=timezone.now(),
    )


def test_key_months_are_prorated_by_day_and_hour_and_rotations_add_up_to_two():
    key(KEY1)
    key(KEY2, created=datetime(2026, 11, 10, 18, 0, tzinfo=UTC), rotations=5)
    result = est.estimate(date(2026, 11, 9), date(2026, 11, 11))
    per_key = {k.key: k for k in result.per_key()}
    assert q(per_key[KEY1].key_months) == q(Decimal(3) / 30)
    # Six hours on the 10th, then a whole day; three dollars a month with its two billed rotations.
    assert q(per_key[KEY2].key_months) == q(Decimal(3) * (Decimal(6) / 24 + 1) / 30)
    assert not per_key[KEY1].assumed


def test_aws_managed_keys_and_keys_pending_deletion_pay_no_key_month_but_pay_requests():
    key(KEY1, manager="AWS")
    key(KEY2, state="PendingDeletion")
    day = date(2026, 11, 25)
    rollup(day, KEY1, 30_000)
    result = est.estimate(day, day)
    per_key = {k.key: k for k in result.per_key()}
    assert per_key[KEY1].key_months == 0
    assert per_key[KEY1].request_cost == 10_000 * SYMMETRIC  # the first 20,000 of November are free
    assert KEY2 not in per_key


def test_each_multi_region_replica_is_billed_as_a_key():
    replica = KEY1.replace("us-east-1", "eu-west-1")
    key(KEY1, multi_region_type="PRIMARY")
    key(replica, multi_region_type="REPLICA")
    result = est.estimate(date(2026, 11, 1), date(2026, 11, 30))
    assert {k.key: q(k.key_months) for k in result.per_key()} == {KEY1: q(Decimal(1)), replica: q(Decimal(1))}


def test_the_free_tier_is_used_up_day_by_day_per_account_and_shared_within_a_day():
    key(KEY1)
    key(KEY2)
    rollup(date(2026, 11, 1), KEY1, 15_000)
    rollup(date(2026, 11, 2), KEY1, 6_000)
    rollup(date(2026, 11, 2), KEY2, 4_000)
    rollup(date(2026, 11, 2), KEY2, 9_000, account=B)  # another account has its own free tier
    result = est.estimate(date(2026, 11, 2), date(2026, 11, 2))
    costs = {(line.account_id, line.key): line.cost for line in result.lines}
    # 5,000 free requests left on the 2nd, shared 60/40 between the two keys of account A.
    assert costs[(A, KEY1)] == 3_000 * SYMMETRIC
    assert costs[(A, KEY2)] == 2_000 * SYMMETRIC
    assert costs[(B, KEY2)] == 0


def test_asymmetric_requests_are_priced_by_key_spec_and_get_no_free_tier():
    key(RSA, spec="RSA_4096")
    key(KEY1, spec="RSA_2048")
    day = date(2026, 11, 3)
    rollup(day, RSA, 1_000, region="eu-west-1", operation="Sign")
    rollup(day, KEY1, 1_000, operation="Verify")
    result = est.estimate(day, day)
    costs = {line.key: line.cost for line in result.lines}
    assert costs == {RSA: Decimal("0.015"), KEY1: Decimal("0.003")}


def test_a_key_missing_from_the_inventory_is_assumed_symmetric_customer_managed_from_first_use():
    rollup(date(2026, 11, 16), UNKNOWN, 100, account=B)
    result = est.estimate(date(2026, 11, 1), date(2026, 11, 30))
    cost = {k.key: k for k in result.per_key()}[UNKNOWN]
    assert cost.assumed and not cost.in_inventory
    assert q(cost.key_months) == q(Decimal(15) / 30)  # 16th .. 30th
    assert (cost.account_id, cost.region) == (B, "us-east-1")


def test_the_key_owners_copy_of_a_cross_account_call_is_charged_once_to_the_caller():
    key(KEY1)
    day = date(2026, 11, 20)
    # Owner A's copy names the caller account; the caller B's own copy is read too.
    rollup(day, KEY1, 50_000, account=A, principal=B)
    rollup(day, KEY1, 50_000, account=B, principal=f"arn:aws:iam::{B}:role/reader")
    # C is not watched: its calls are only known from A's copy and charged to C.
    rollup(day, KEY1, 30_000, account=A, principal=C)
    result = est.estimate(day, day)
    requests = {line.account_id: line.requests for line in result.lines}
    assert requests == {B: 50_000, C: 30_000}


def test_failed_requests_are_counted_too():
    key(KEY1)
    day = date(2026, 11, 28)
    rollup(day, KEY1, 25_000)
    rollup(day, KEY1, 5_000, error_code="AccessDeniedException")
    result = est.estimate(day, day)
    assert sum(line.requests for line in result.lines) == 30_000


def test_the_estimate_reconciles_with_cost_explorer_and_says_by_how_much_it_differs():
    key(KEY1)
    day = date(2026, 11, 1)
    rollup(day, KEY1, 50_000)
    actual(day, A, "us-east-1-KMS-Keys", "0.0333333333")
    actual(day, A, "us-east-1-KMS-Requests", "0.09")
    actual(day, A, "us-east-1-KMS-Requests-GenerateDatakeyPair-RSA", "0.12")  # nothing in the rollups explains it
    other = date(2026, 11, 2)
    actual(other, A, "us-east-1-KMS-Keys", "0.0333333333")
    result = est.estimate(day, other)
    recon = est.reconcile(result, daily_costs(day, other))
    first, second = recon.days
    assert first.actual == Decimal("0.2433333333")
    assert first.attributed == Decimal(1) / 30 + Decimal("0.09")
    assert abs(first.unattributed - Decimal("0.12")) < Decimal("1e-9")
    assert abs(second.unattributed) < Decimal("1e-9")
    assert recon.actual == first.actual + second.actual
    assert recon.unattributed == recon.actual - recon.attributed
    assert Decimal("50") < recon.attributed_share < Decimal("60")
    [account] = est.reconcile_accounts(result, daily_costs(day, other))
    assert account.account_id == A and account.actual == recon.actual
    assert q(account.attributed) == q(recon.attributed) and q(account.unattributed) == q(recon.unattributed)


def test_drivers_rank_keys_principals_and_services_by_estimated_request_cost():
    key(KEY1)
    key(KEY2)
    day = date(2026, 11, 10)
    rollup(date(2026, 11, 1), KEY2, 20_000, principal="free")  # uses up the free tier
    rollup(day, KEY1, 100_000, principal=ROLE)
    rollup(day, KEY2, 300_000, principal="s3.amazonaws.com", service="s3.amazonaws.com")
    result = est.estimate(day, day)
    assert [label for label, _, _ in result.drivers("key")] == [KEY2, KEY1]
    assert result.drivers("principal")[0] == ("s3.amazonaws.com", 300_000, Decimal("0.9"))
    assert [label for label, _, _ in result.drivers("service")] == ["s3.amazonaws.com", ""]


def s3_event(bucket_arn, when, *, n=1):
    # Through the write path: the savings finder reads the bucket summary it maintains.
    identity = identity_role(A, "app", "AWSService", invoked_by="s3.amazonaws.com")
    records = [
        kms_record(
            event_name="GenerateDataKey",
            event_time=when,
            key_arn=KEY1,
            identity=identity,
            region="us-east-1",
            recipient_account_id=A,
            encryption_context={"aws:s3:arn": bucket_arn},
        )
        for _ in range(n)
    ]
    ingest_records(records, run=start_run(IngestRun.Kind.FILES))


def test_buckets_whose_contexts_name_objects_are_bucket_key_savings():
    when = datetime(2026, 11, 20, 12, tzinfo=UTC)
    s3_event("arn:aws:s3:::no-bucket-key/reports/a.csv", when, n=70)
    s3_event("arn:aws:s3:::with-bucket-key", when, n=7)
    s3_event("arn:aws:s3:::<img src=x>/o", when - timedelta(days=30), n=5)  # outside the window
    found = {b.bucket: b for b in savings.bucket_keys(date(2026, 11, 20))}
    assert set(found) == {"no-bucket-key", "with-bucket-key"}
    assert found["no-bucket-key"].names_objects and found["no-bucket-key"].monthly_requests == 304
    assert found["no-bucket-key"].monthly_saving == (
        Decimal(70) * Decimal("30.4") / 7 * SYMMETRIC * Decimal("0.99")
    ).quantize(Decimal("0.01"))
    assert not found["with-bucket-key"].names_objects and found["with-bucket-key"].monthly_saving == 0


def test_steady_heavy_data_key_callers_are_caching_candidates(settings):
    settings.KMSDASH_DATA_KEY_CACHE_HIT_RATE = 0.5
    key(KEY1)
    end = date(2026, 11, 20)
    for offset in range(14):
        day = end - timedelta(days=offset)
        rollup(day, KEY1, 30_000, operation="GenerateDataKey", principal=ROLE)
        rollup(day, KEY1, 30_000, operation="Decrypt", principal="s3.amazonaws.com", service="s3.amazonaws.com")
    rollup(end, KEY1, 2_000_000, operation="Decrypt", principal="arn:aws:iam::111122223333:role/batch")  # one burst
    found = savings.data_key_caching(end)
    assert [c.principal for c in found] == [ROLE]
    assert found[0].daily_average == 30_000 and found[0].active_days == 14
    assert found[0].monthly_saving == (30_000 * Decimal("30.4") * SYMMETRIC / 2).quantize(Decimal("0.01"))


def test_idle_keys_have_no_use_in_ninety_days_by_rollups_and_inventory(settings):
    today = date(2026, 11, 29)
    idle = KEY1
    used_recently = KEY2
    key(idle, rotations=1)
    key(used_recently)
    key(RSA, last_used_at=datetime(2026, 11, 1, tzinfo=UTC))  # GetKeyLastUsage saw it: not idle
    key(UNKNOWN, created=datetime(2026, 10, 1, tzinfo=UTC))  # too young to call idle
    key(f"arn:aws:kms:us-east-1:{A}:key/55555555-5555-5555-5555-555555555555", manager="AWS")
    rollup(today - timedelta(days=100), idle, 5)
    rollup(today - timedelta(days=10), used_recently, 5)
    found = savings.idle_keys(today)
    assert [(k.arn, k.last_used, k.monthly_saving) for k in found] == [(idle, today - timedelta(days=100), Decimal(2))]


def test_source_accounts_count_as_watched_even_without_rollups_of_their_own():
    Source.objects.create(account_id=B, regions=["us-east-1"])
    key(KEY1)
    day = date(2026, 11, 20)
    rollup(day, KEY1, 1_000, account=A, principal=B)
    assert est.estimate(day, day).lines == []


def estimate_row_by_row(start, end):
    """Each rollup row priced on its own: the reference estimate() must agree with after summing in SQL."""
    table = est.prices()
    facts = est.load_key_facts()
    rows = DailyRollup.objects.filter(day__gte=est.month_start(start), day__lte=end).order_by("day", "id")
    watched = set(Source.objects.values_list("account_id", flat=True)) | {row.account_id for row in rows}
    lines = []
    for row in rows:
        account = row.account_id
        if row.principal != account and est.ACCOUNT_RE.match(row.principal):
            if row.principal in watched:
                continue
            account = row.principal
        key_facts = facts.get(row.key) or est.KeyFacts.assumed_for(row.key)
        name = est.request_price_name(key_facts.key_spec if key_facts else "", row.operation)
        gross = table[name] * row.count
        lines.append([row, account, name, gross, gross])
    spent = {}
    for day in sorted({line[0].day for line in lines}):
        for account in sorted({line[1] for line in lines}):
            free_lines = [line for line in lines if (line[0].day, line[1]) == (day, account) and line[2] == "symmetric"]
            eligible = sum(line[0].count for line in free_lines)
            month = (account, day.replace(day=1))
            free = min(table["free_requests_per_month"] - spent.get(month, 0), Decimal(eligible))
            if eligible and free:
                spent[month] = spent.get(month, 0) + free
                for line in free_lines:
                    line[4] = line[3] * (1 - free / eligible)
    totals = {by: {} for by in ("key", "principal", "service", "account", "day")}
    for row, account, _, _, cost in (line for line in lines if line[0].day >= start):
        for by, label in (
            ("key", row.key),
            ("principal", row.principal),
            ("service", row.service),
            ("account", account),
            ("day", row.day),
        ):
            requests, amount = totals[by].get(label, (0, Decimal(0)))
            totals[by][label] = (requests + row.count, amount + cost)
    return totals


def test_summing_the_rollups_in_sql_changes_no_figure_of_the_estimate():
    key(KEY1)
    key(RSA, spec="RSA_4096")
    key(KEY2, spec="RSA_2048")
    Source.objects.create(account_id=B, regions=["us-east-1"])
    arabic_digits = "\u0661" * 12  # matches ACCOUNT_RE (\d is Unicode) like an account id
    principals = [ROLE, f"arn:aws:iam::{A}:role/batch", B, C, f"{C}\n", A, arabic_digits, "1234567890123"]
    operations = ["Decrypt", "Encrypt", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "Sign"]
    n = 0
    for day in (date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)):
        for arn in (KEY1, RSA, KEY2, UNKNOWN):
            for operation in operations:
                for principal in principals:
                    for service, error_code in (("", ""), ("s3.amazonaws.com", ""), ("", "AccessDenied")):
                        n += 1
                        rollup(
                            day,
                            arn,
                            97 * n % 800 + 1,
                            operation=operation,
                            principal=principal,
                            service=service,
                            error_code=error_code,
                            account=B if arn == UNKNOWN else A,
                        )
    start, end = date(2026, 11, 2), date(2026, 11, 4)
    result = est.estimate(start, end)
    reference = estimate_row_by_row(start, end)

    def close(figures):  # Decimal sums in another order differ in the 28th digit at most
        return {label: (requests, q(cost)) for label, (requests, cost) in figures.items()}

    for by in ("key", "principal", "service"):
        drivers = {label: (requests, cost) for label, requests, cost in result.drivers(by, limit=100)}
        assert close(drivers) == close(reference[by]), by
    per_key = {cost.key: (cost.requests, cost.request_cost) for cost in result.per_key() if cost.requests}
    assert close(per_key) == close(reference["key"])
    by_account, by_day = {}, {}
    for line in result.lines:
        by_account[line.account_id] = by_account.get(line.account_id, Decimal(0)) + line.cost
        by_day[line.day] = by_day.get(line.day, Decimal(0)) + line.cost
    assert {a: q(c) for a, c in by_account.items()} == {a: q(c) for a, (_, c) in reference["account"].items()}
    assert {d: q(c) for d, c in by_day.items()} == {d: q(c) for d, (_, c) in reference["day"].items()}
    # The cases that matter are there: callers charged, copies skipped, the free tier shared within a day.
    assert {C, f"{C}\n", arabic_digits} <= set(by_account) and B in by_account
    assert {"data_key_pair_ecc", "asymmetric", "asymmetric_rsa_2048", "symmetric"} == {
        line.price_name for line in result.lines
    }
    shared = [line for line in result.lines if (line.day, line.account_id, line.price_name) == (start, A, "symmetric")]
    assert 0 < sum(line.cost for line in shared) < sum(line.gross for line in shared)
