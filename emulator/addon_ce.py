"""Cost Explorer GetCostAndUsage, served from a dataset the tests and the demo set.

    POST /_kmsdash/ce/dataset    {"rows": [{"date": "2026-11-01", "account": "111122223333",
                                  "usage_type": "us-east-1-KMS-Requests", "cost": "0.1234",
                                  "usage": "41133", "estimated": true}],
                                  "page_size": 20, "service": "AWS Key Management Service",
                                  "payer": "123456789012"}
        replaces the dataset served to the payer account (default: the emulator's default
        account); a restatement is just a new POST.
    POST /_kmsdash/ce/page-fault {"page": 2, "error": "RequestChangedException", "count": 1}
        fails the next `count` requests for that page (1 = the first page) with `error`, so a
        test can break a query in the middle of its pagination.

GetCostAndUsage honours TimePeriod (Start inclusive, End exclusive), DAILY granularity, Filter
(Dimensions SERVICE / LINKED_ACCOUNT / USAGE_TYPE / REGION with And, Or, Not), up to two GroupBy
dimensions (USAGE_TYPE, LINKED_ACCOUNT, SERVICE, REGION), any Metrics (UsageQuantity is the
usage, every other metric the cost), pagination with NextPageToken (page_size results-by-time per
page; the token is bound to the request parameters: RequestChangedException when they change,
InvalidNextTokenException when the token is unknown), Total {} when grouped, and a day is
Estimated when any row of it is.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from werkzeug.wrappers import Request

from .server import Call, addon, aws_error, control, json_response, on_reset

TARGET = "AWSInsightsIndexService.GetCostAndUsage"
DEFAULT_PAYER = "123456789012"
DEFAULT_SERVICE = "AWS Key Management Service"
DIMENSIONS = {"USAGE_TYPE": "usage_type", "LINKED_ACCOUNT": "account", "SERVICE": "service", "REGION": "region"}


@dataclass
class _Dataset:
    rows: list[dict[str, Any]]
    page_size: int = 20


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    datasets: dict[str, _Dataset] = field(default_factory=dict)
    tokens: dict[str, tuple[str, int]] = field(default_factory=dict)  # token -> (signature, offset)
    page_faults: list[dict[str, Any]] = field(default_factory=list)


STATE = _State()


@on_reset
def _reset() -> None:
    with STATE.lock:
        STATE.datasets.clear()
        STATE.tokens.clear()
        STATE.page_faults.clear()


def _row(raw: dict[str, Any], service: str) -> dict[str, Any]:
    usage_type = str(raw["usage_type"])
    region = usage_type.split("-KMS-", 1)[0] if "-KMS-" in usage_type else ""
    return {
        "date": date.fromisoformat(str(raw["date"])),
        "account": str(raw["account"]),
        "usage_type": usage_type,
        "service": str(raw.get("service", service)),
        "region": str(raw.get("region", region)),
        "cost": Decimal(str(raw.get("cost", "0"))),
        "usage": Decimal(str(raw.get("usage", "0"))),
        "usage_unit": str(raw.get("usage_unit", "N/A")),
        "estimated": bool(raw.get("estimated", False)),
    }


@control("ce/dataset")
def set_dataset(request: Request) -> dict[str, Any]:
    spec = request.get_json(force=True)
    service = spec.get("service", DEFAULT_SERVICE)
    rows = [_row(raw, service) for raw in spec.get("rows", [])]
    with STATE.lock:
        STATE.datasets[str(spec.get("payer", DEFAULT_PAYER))] = _Dataset(rows, int(spec.get("page_size", 20)))
    return {"ok": True, "rows": len(rows)}


@control("ce/page-fault")
def page_fault(request: Request) -> dict[str, Any]:
    spec = request.get_json(force=True)
    with STATE.lock:
        STATE.page_faults.append(
            {
                "page": int(spec.get("page", 2)),
                "error": spec.get("error", "RequestChangedException"),
                "count": int(spec.get("count", 1)),
            }
        )
    return {"ok": True}


def _matches(expression: dict[str, Any] | None, row: dict[str, Any]) -> bool:
    if not expression:
        return True
    if "And" in expression:
        return all(_matches(part, row) for part in expression["And"])
    if "Or" in expression:
        return any(_matches(part, row) for part in expression["Or"])
    if "Not" in expression:
        return not _matches(expression["Not"], row)
    if "Dimensions" in expression:
        spec = expression["Dimensions"]
        return row.get(DIMENSIONS.get(spec.get("Key", ""), ""), None) in spec.get("Values", [])
    raise ValueError(f"filter not emulated: {sorted(expression)}")


def _amount(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _metrics(rows: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    out = {}
    for metric in metrics:
        if metric == "UsageQuantity":
            units = {row["usage_unit"] for row in rows}
            out[metric] = {
                "Amount": _amount(sum((r["usage"] for r in rows), Decimal(0))),
                "Unit": units.pop() if len(units) == 1 else "N/A",
            }
        else:
            out[metric] = {"Amount": _amount(sum((r["cost"] for r in rows), Decimal(0))), "Unit": "USD"}
    return out


def _signature(body: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in body.items() if k != "NextPageToken"}, sort_keys=True)


def _take_page_fault(page: int) -> str | None:
    for fault in STATE.page_faults:
        if fault["page"] == page and fault["count"] > 0:
            fault["count"] -= 1
            if fault["count"] == 0:
                STATE.page_faults.remove(fault)
            return fault["error"]
    return None


@addon(TARGET)
def get_cost_and_usage(call: Call):
    body = call.body
    try:
        period = body["TimePeriod"]
        start, end = date.fromisoformat(period["Start"]), date.fromisoformat(period["End"])
        granularity = body["Granularity"]
        metrics = list(body["Metrics"])
    except (KeyError, TypeError, ValueError) as exc:
        return aws_error("ValidationException", f"Invalid request: {exc}")
    if start >= end:
        return aws_error("ValidationException", "Start date must be before the end date")
    if granularity != "DAILY":
        return aws_error("ValidationException", "Only DAILY granularity is emulated")
    group_by = body.get("GroupBy") or []
    if len(group_by) > 2:
        return aws_error("ValidationException", "You can group by at most two dimensions")
    for group in group_by:
        if group.get("Type") != "DIMENSION" or group.get("Key") not in DIMENSIONS:
            return aws_error("ValidationException", f"Group by {group} is not emulated")

    signature = _signature(body)
    with STATE.lock:
        token = body.get("NextPageToken")
        offset = 0
        if token:
            if token not in STATE.tokens:
                return aws_error("InvalidNextTokenException", "The next page token is invalid")
            bound, offset = STATE.tokens[token]
            if bound != signature:
                return aws_error("RequestChangedException", "Your request parameters changed between pages")
        dataset = STATE.datasets.get(call.account) or _Dataset([])
        page_size = max(1, dataset.page_size)
        error = _take_page_fault(offset // page_size + 1)
        if error:
            return aws_error(error, "Injected by the kmsdash emulator")
        try:
            rows = [row for row in dataset.rows if start <= row["date"] < end and _matches(body.get("Filter"), row)]
        except ValueError as exc:
            return aws_error("ValidationException", str(exc))
        days = [start + timedelta(days=n) for n in range((end - start).days)]
        page = days[offset : offset + page_size]
        next_token = None
        if offset + page_size < len(days):
            next_token = secrets.token_urlsafe(24)
            STATE.tokens[next_token] = (signature, offset + page_size)

    results = []
    for day in page:
        day_rows = [row for row in rows if row["date"] == day]
        result: dict[str, Any] = {
            "TimePeriod": {"Start": day.isoformat(), "End": (day + timedelta(days=1)).isoformat()},
            "Estimated": any(row["estimated"] for row in day_rows),
        }
        if group_by:
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for row in day_rows:
                keys = tuple(row[DIMENSIONS[group["Key"]]] for group in group_by)
                groups.setdefault(keys, []).append(row)
            result["Total"] = {}
            result["Groups"] = [
                {"Keys": list(keys), "Metrics": _metrics(members, metrics)} for keys, members in sorted(groups.items())
            ]
        else:
            result["Total"] = _metrics(day_rows, metrics)
            result["Groups"] = []
        results.append(result)

    response: dict[str, Any] = {
        "GroupDefinitions": [{"Type": g["Type"], "Key": g["Key"]} for g in group_by],
        "ResultsByTime": results,
        "DimensionValueAttributes": [],
    }
    if next_token:
        response["NextPageToken"] = next_token
    return json_response(response)
