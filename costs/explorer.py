"""The only code that talks to Cost Explorer: KMS daily cost by usage type and linked account.

Cost Explorer is called once, with the payer (management) account's credentials from the default
chain, grouped by LINKED_ACCOUNT; boto3 has no paginator for GetCostAndUsage, so pages are
followed here with identical parameters. Every HTTP request is counted: each one is billed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from botocore.exceptions import ClientError

from kmsdash import aws

log = logging.getLogger(__name__)

SERVICE_NAME = "AWS Key Management Service"
# A query whose token went stale is restarted from its first page, a bounded number of times.
RESTART_ERRORS = frozenset({"RequestChangedException", "InvalidNextTokenException"})
MAX_RESTARTS = 3
# A runaway pagination (a token that never ends) must not run up the bill.
MAX_PAGES = 500


class CostExplorerError(Exception):
    """Cost Explorer refused or kept failing; nothing was written."""


class CostExplorerThrottled(CostExplorerError):
    """LimitExceededException survived botocore's own retries: worth retrying later."""


@dataclass
class Tally:
    """What a fetch cost, kept up to date as it goes so a failed run still records it."""

    requests: int = 0
    pages: int = 0
    restarts: int = 0


@dataclass
class Fetched:
    results: list[dict[str, Any]] = field(default_factory=list)
    group_keys: list[str] = field(default_factory=list)


def ce_client():
    """Cost Explorer is signed in us-east-1 whatever region the deployment runs in."""
    return aws.client("ce", "us-east-1")


def request_for(start: date, end: date, metric: str) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
        "Granularity": "DAILY",
        "Metrics": [metric, "UsageQuantity"],
        "Filter": {"Dimensions": {"Key": "SERVICE", "Values": [SERVICE_NAME]}},
        "GroupBy": [{"Type": "DIMENSION", "Key": "USAGE_TYPE"}, {"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"}],
    }


def _attempts(metadata: dict[str, Any] | None) -> int:
    return int((metadata or {}).get("RetryAttempts", 0)) + 1


def fetch_kms_costs(start: date, end: date, metric: str, tally: Tally, *, client=None) -> Fetched:
    """Every ResultsByTime of the window [start, end) (End exclusive), all pages.

    RequestChangedException / InvalidNextTokenException restart the query without a token, at
    most MAX_RESTARTS times; LimitExceededException is retried by botocore's standard mode.
    """
    ce = client or ce_client()
    request = request_for(start, end, metric)
    while True:
        fetched = Fetched(group_keys=[g["Key"] for g in request["GroupBy"]])
        token = None
        try:
            while True:
                params = dict(request, NextPageToken=token) if token else request
                try:
                    response = ce.get_cost_and_usage(**params)
                except ClientError as exc:
                    tally.requests += _attempts(exc.response.get("ResponseMetadata"))
                    raise
                tally.requests += _attempts(response.get("ResponseMetadata"))
                tally.pages += 1
                fetched.results.extend(response.get("ResultsByTime", []))
                token = response.get("NextPageToken")
                if not token:
                    return fetched
                if tally.pages >= MAX_PAGES:
                    raise CostExplorerError(f"more than {MAX_PAGES} pages: stopped")
        except ClientError as exc:
            code = aws.error_code(exc)
            if code in RESTART_ERRORS and tally.restarts < MAX_RESTARTS:
                tally.restarts += 1
                log.warning("cost explorer query restarted", extra={"error_code": code, "restarts": tally.restarts})
                continue
            if code == "LimitExceededException":
                raise CostExplorerThrottled(code) from exc
            raise CostExplorerError(f"{code}: {exc.response.get('Error', {}).get('Message', '')}") from exc
