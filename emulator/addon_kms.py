"""KMS as AWS serves it, where moto differs: list pagination, GetKeyLastUsage, key metadata.

- ListKeys, ListAliases, ListGrants, ListResourceTags honour Limit / Marker / Truncated / NextMarker
  (moto returns everything in one page). ListAliases leaves out the aliases moto copies onto a
  multi-Region replica from its primary. The add-on asks moto for the full list (re-dispatching
  the call without Limit/Marker) and pages it; a marker from another listing is InvalidMarkerException.
- GetKeyLastUsage (moto lacks it) answers from a per-key store set through a control route, and
  enforces the API's 5 requests/s per account and region with ThrottlingException.
- DescribeKey: moto's replica shares its primary's multi-region configuration object, so either
  key may claim the other's type; the type is derived from the key's own ARN here. Keys behind
  the predefined `alias/aws/...` aliases are reported as AWS managed, as in AWS. Keys given
  imported key material through the control route below report ExpirationModel and ValidTo
  (moto has no ImportKeyMaterial).

Control routes:
    POST /_kmsdash/kms/last-usage {"key_arn", "operation", "timestamp" (ISO), "tracking_start"?}
    POST /_kmsdash/kms/key-dates  {"key_arn", "creation_date" (ISO)}   backdates a key (demo, tests)
    POST /_kmsdash/kms/key-material {"key_arn", "valid_to" (ISO) | null}  imported material, expiring
                                  at valid_to (null: it does not expire); the key must be EXTERNAL
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

from werkzeug.test import EnvironBuilder, run_wsgi_app
from werkzeug.wrappers import Request

from emulator.server import Call, addon, aws_error, control, json_response, on_reset

PREFIX = "TrentService."
LIMITS = {  # operation -> (default Limit, max Limit, list field)
    "ListKeys": (100, 1000, "Keys"),
    "ListAliases": (50, 100, "Aliases"),
    "ListGrants": (50, 100, "Grants"),
    "ListResourceTags": (50, 50, "Tags"),
}
LAST_USAGE_RATE = 5  # requests per second per account and region (AWS's fixed quota)

_lock = threading.Lock()
_last_usage: dict[str, dict[str, Any]] = {}
_last_usage_calls: dict[tuple[str, str], deque[float]] = {}
_key_material: dict[str, float | None] = {}  # key ARN -> ValidTo (epoch seconds), None: never expires
_moto_app = None


@on_reset
def _reset() -> None:
    with _lock:
        _last_usage.clear()
        _last_usage_calls.clear()
        _key_material.clear()


def _moto():
    global _moto_app
    if _moto_app is None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        _moto_app = DomainDispatcherApplication(create_backend_app)
    return _moto_app


def _dispatch(call: Call, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Ask moto for `operation` as the same caller (account and region come from the access key)."""
    headers = {
        "X-Amz-Target": PREFIX + operation,
        "Content-Type": "application/x-amz-json-1.1",
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={call.access_key}/20260101/{call.region}/kms/aws4_request, "
            "SignedHeaders=host;x-amz-date;x-amz-target, Signature=0"
        ),
        "Host": f"kms.{call.region}.amazonaws.com",
    }
    builder = EnvironBuilder(method="POST", path="/", headers=list(headers.items()), data=json.dumps(body))
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    app_iter, status, _headers = run_wsgi_app(_moto(), environ)
    try:
        payload = b"".join(app_iter)
    finally:
        if hasattr(app_iter, "close"):
            app_iter.close()
    code = int(status.split(" ", 1)[0])
    try:
        data = json.loads(payload or b"{}") or {}
    except ValueError:
        data = {}
    return code, data


def _marker(operation: str, body: dict[str, Any], offset: int) -> str:
    scope = {k: v for k, v in body.items() if k not in ("Limit", "Marker")}
    raw = json.dumps({"op": operation, "scope": scope, "offset": offset}, sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _offset(operation: str, body: dict[str, Any], marker: str) -> int | None:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(marker.encode()))
        scope = {k: v for k, v in body.items() if k not in ("Limit", "Marker")}
        if decoded["op"] != operation or decoded["scope"] != scope:
            return None
        return int(decoded["offset"])
    except (ValueError, KeyError, TypeError):
        return None


def _paginated(operation: str):
    default, maximum, field = LIMITS[operation]

    def handler(call: Call):
        body = dict(call.body)
        limit = body.pop("Limit", None)
        marker = body.pop("Marker", None)
        if limit is None:
            limit = default
        if not isinstance(limit, int) or not 1 <= limit <= maximum:
            return aws_error("ValidationException", f"Limit must be between 1 and {maximum}")
        offset = 0
        if marker is not None:
            decoded = _offset(operation, call.body, marker)
            if decoded is None:
                return aws_error("InvalidMarkerException", "The request was rejected because the marker is not valid.")
            offset = decoded
        status, data = _dispatch(call, operation, body)
        if status != 200:
            return json_response(data, status=status)
        items = data.get(field) or []
        if operation == "ListAliases":
            # moto's replica is a copy of its primary, aliases included, so the primary's aliases
            # would be listed in the replica's region too (with the primary's alias ARN): AWS never
            # replicates aliases.
            items = [a for a in items if str(a.get("AliasArn", "")).split(":")[3:4] in ([call.region], [])]
        page = items[offset : offset + limit]
        result = {k: v for k, v in data.items() if k not in (field, "NextMarker", "Truncated")}
        result[field] = page
        truncated = offset + limit < len(items)
        result["Truncated"] = truncated
        if truncated:
            result["NextMarker"] = _marker(operation, call.body, offset + limit)
        return json_response(result)

    return handler


for _operation in LIMITS:
    addon(PREFIX + _operation)(_paginated(_operation))


def _backend(account: str, region: str):
    from moto.kms.models import kms_backends

    return kms_backends[account][region]


def _find_key(call: Call, key_id: str):
    backend = _backend(call.account, call.region)
    bare = backend.get_key_id(key_id)
    return backend.keys.get(bare)


@addon(PREFIX + "DescribeKey")
def describe_key(call: Call):
    status, data = _dispatch(call, "DescribeKey", call.body)
    if status != 200:
        return json_response(data, status=status)
    metadata = data.get("KeyMetadata") or {}
    config = metadata.get("MultiRegionConfiguration")
    if isinstance(config, dict):
        config = json.loads(json.dumps(config))
        primary = (config.get("PrimaryKey") or {}).get("Arn")
        config["MultiRegionKeyType"] = "PRIMARY" if primary == metadata.get("Arn") else "REPLICA"
        metadata["MultiRegionConfiguration"] = config
    # CreateKey defaults KeyUsage to ENCRYPT_DECRYPT; moto leaves it empty.
    metadata["KeyUsage"] = metadata.get("KeyUsage") or "ENCRYPT_DECRYPT"
    key = _find_key(call, metadata.get("KeyId", ""))
    if key is not None and any(str(a).startswith("alias/aws/") for a in getattr(key, "aliases", ()) or ()):
        metadata["KeyManager"] = "AWS"
    if key is not None and key.creation_date:
        metadata["CreationDate"] = key.creation_date
    with _lock:
        imported = key is not None and key.arn in _key_material
        valid_to = _key_material.get(key.arn) if key is not None else None
    if imported:
        metadata["ExpirationModel"] = "KEY_MATERIAL_EXPIRES" if valid_to is not None else "KEY_MATERIAL_DOES_NOT_EXPIRE"
        if valid_to is not None:
            metadata["ValidTo"] = valid_to
    data["KeyMetadata"] = metadata
    return json_response(data)


def _throttled(call: Call) -> bool:
    now = time.monotonic()
    with _lock:
        window = _last_usage_calls.setdefault((call.account, call.region), deque())
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= LAST_USAGE_RATE:
            return True
        window.append(now)
        return False


@addon(PREFIX + "GetKeyLastUsage")
def get_key_last_usage(call: Call):
    if _throttled(call):
        return aws_error("ThrottlingException", "You have exceeded the rate at which you may call KMS.")
    key_id = call.body.get("KeyId", "")
    if not isinstance(key_id, str) or key_id.startswith("alias/") or ":alias/" in key_id:
        return aws_error("ValidationException", "KeyId must be a key ID or key ARN.")
    key = _find_key(call, key_id)
    if key is None:
        return aws_error("NotFoundException", f"Key '{key_id}' does not exist")
    with _lock:
        usage = dict(_last_usage.get(key.arn, {}))
    result: dict[str, Any] = {"KeyId": key.arn, "KeyCreationDate": key.creation_date}
    result["TrackingStartDate"] = usage.pop("tracking_start", None) or key.creation_date
    if usage:
        result["KeyLastUsage"] = {
            "Operation": usage["operation"],
            "Timestamp": usage["timestamp"],
            "CloudTrailEventId": usage.get("event_id", ""),
            "KmsRequestId": usage.get("request_id", ""),
        }
    return json_response(result)


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@control("kms/last-usage")
def set_last_usage(request: Request):
    spec = request.get_json(force=True)
    entry = {"operation": spec.get("operation", "Decrypt"), "timestamp": _epoch(spec["timestamp"])}
    if spec.get("tracking_start"):
        entry["tracking_start"] = _epoch(spec["tracking_start"])
    with _lock:
        _last_usage[spec["key_arn"]] = entry
    return {"ok": True}


@control("kms/key-dates")
def set_key_dates(request: Request):
    spec = request.get_json(force=True)
    arn = spec["key_arn"]
    account, region = arn.split(":")[4], arn.split(":")[3]
    backend = _backend(account, region)
    key = backend.keys.get(backend.get_key_id(arn))
    if key is None:
        return {"ok": False, "error": "no such key"}
    key.creation_date = _epoch(spec["creation_date"])
    return {"ok": True}


@control("kms/key-material")
def set_key_material(request: Request):
    spec = request.get_json(force=True)
    arn = spec["key_arn"]
    backend = _backend(arn.split(":")[4], arn.split(":")[3])
    key = backend.keys.get(backend.get_key_id(arn))
    if key is None or key.origin != "EXTERNAL":
        return {"ok": False, "error": "no such key with imported material (Origin EXTERNAL)"}
    with _lock:
        _key_material[key.arn] = _epoch(spec["valid_to"]) if spec.get("valid_to") else None
    return {"ok": True}


ROTATABLE_SPEC = "SYMMETRIC_DEFAULT"


@addon(PREFIX + "GetKeyRotationStatus")
def get_key_rotation_status(call: Call):
    """AWS refuses rotation status for keys that cannot rotate; moto answers False for them."""
    key = _find_key(call, str(call.body.get("KeyId", "")))
    if key is not None and (key.key_spec != ROTATABLE_SPEC or key.origin != "AWS_KMS"):
        return aws_error(
            "UnsupportedOperationException",
            f"{key.arn} origin is {key.origin} / spec {key.key_spec}, which is not valid for this operation.",
        )
    status, data = _dispatch(call, "GetKeyRotationStatus", call.body)
    if status == 200 and key is not None:
        data["KeyId"] = key.arn
        if data.get("KeyRotationEnabled"):
            data.setdefault("RotationPeriodInDays", getattr(key, "rotation_period_in_days", None) or 365)
    return json_response(data, status=status)
