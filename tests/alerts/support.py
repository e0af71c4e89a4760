"""Records, history and a notification recorder for the alerts tests (the `notified` fixture in
conftest.py hands it out). Records go through the real ingestion path, so the summaries the
detections read are the real ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from audits import synthetic
from audits.ingest import finish_run, ingest_records, start_run
from audits.models import IngestRun

# The hour being judged; history runs over the days before it.
T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
A, B, FOREIGN = "111122223333", "444455556666", "999988887777"
K1 = f"arn:aws:kms:us-east-1:{A}:key/11111111-1111-4111-8111-111111111111"
K2 = f"arn:aws:kms:us-east-1:{A}:key/22222222-2222-4222-8222-222222222222"
APP = f"arn:aws:iam::{A}:role/app"


def ingest(records) -> IngestRun:
    run = start_run(IngestRun.Kind.FILES)
    return finish_run(run, ingest_records(list(records), run=run))


def role(name: str = "app", account: str = A, **options) -> dict:
    return synthetic.identity_role(account, name, f"{name}-1", **options)


def rec(
    name: str = "Decrypt",
    *,
    when: datetime = T,
    key: str = K1,
    identity: dict | None = None,
    account: str = A,
    error: str | None = None,
    **extra,
) -> dict:
    return synthetic.kms_record(
        event_name=name,
        event_time=when,
        key_arn=key,
        identity=identity or role(),
        region="us-east-1",
        recipient_account_id=account,
        error_code=error,
        error_message="denied" if error else None,
        **extra,
    )


def hourly(*, days: int = 15, per_hour: int = 2, end: datetime = T, hours=range(8, 18), **fields) -> list[dict]:
    """`per_hour` records in each of `hours` (UTC) of each of the `days` days before `end`."""
    start = (end - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    day = start
    while day < end.replace(hour=0, minute=0, second=0, microsecond=0):
        for hour in hours:
            for n in range(per_hour):
                out.append(rec(when=day + timedelta(hours=hour, minutes=(n * 7) % 60, seconds=n), **fields))
        day += timedelta(days=1)
    return out


class Recorder:
    """notify_alert's calls as (event, alert dict); evaluate() runs the on-commit callbacks."""

    def __init__(self, capture):
        self.calls: list[tuple[str, dict]] = []
        self._capture = capture

    def evaluate(self, **options):
        from alerts.services import evaluate

        with self._capture(execute=True):
            return evaluate(**options)

    def events(self) -> list[str]:
        return [event for event, _ in self.calls]
