"""A local AWS emulator: moto in server mode, plus what moto lacks, plus fault injection.

boto3 reaches it through AWS_ENDPOINT_URL, so the real client path (signing, pagination,
retries) runs in tests and in the demo. The project's additions are JSON-protocol operations
registered in ADDONS by their X-Amz-Target (for example CloudTrail LookupEvents), and a small
control API under /_kmsdash/ used by tests and the demo seeder:

    POST /_kmsdash/faults     {"target": "...LookupEvents", "error": "ThrottlingException",
                               "status": 400, "count": 2, "delay": 0.0}
    GET  /_kmsdash/requests   every request seen: [{"time", "target", "access_key", "region", "user_agent",
                              "service", "method", "path", "query", "action"}] (service: the signing
                              name; action: a query-protocol request's Action, e.g. AssumeRole;
                              target: X-Amz-Target, else "<service>:<Action>", else "<service>:<METHOD> <path>")
    POST /_kmsdash/reset      forget faults, request log and add-on state

Add-on modules register themselves with `addon(target)` and keep their own state; they expose
their own control routes with `control(path)`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

# moto files its ~1,300 public AMIs and their snapshots under every account it creates, so an EC2
# DescribeSnapshots(OwnerIds=["self"]) would page through them (seconds per account); nothing
# kmsdash emulates needs them. Read by moto when a backend is created, so set before any is.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

from moto.moto_server.werkzeug_app import (  # noqa: E402 - after the setting above
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

AddonHandler = Callable[["Call"], Response]
ControlHandler = Callable[[Request], Any]

ADDONS: dict[str, AddonHandler] = {}
CONTROLS: dict[str, ControlHandler] = {}
RESETS: list[Callable[[], None]] = []

_CREDENTIAL_RE = re.compile(r"Credential=([^/]+)/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")


def addon(target: str) -> Callable[[AddonHandler], AddonHandler]:
    """Register a handler for a JSON-protocol operation, e.g. 'com.amazonaws....LookupEvents'."""

    def register(handler: AddonHandler) -> AddonHandler:
        ADDONS[target] = handler
        return handler

    return register


def control(path: str) -> Callable[[ControlHandler], ControlHandler]:
    """Register a control route under /_kmsdash/<path>; the handler returns JSON-able data."""

    def register(handler: ControlHandler) -> ControlHandler:
        CONTROLS[path] = handler
        return handler

    return register


def on_reset(func: Callable[[], None]) -> Callable[[], None]:
    RESETS.append(func)
    return func


@dataclass
class Call:
    """One AWS request as an add-on sees it."""

    target: str
    access_key: str
    region: str
    service: str
    body: dict[str, Any]

    @property
    def account(self) -> str:
        return account_for_access_key(self.access_key)


@dataclass
class Fault:
    target: str
    error: str
    status: int = 400
    count: int = 1
    delay: float = 0.0
    message: str = "Injected by the kmsdash emulator"


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: list[Fault] = field(default_factory=list)
    # Bounded: a long-running demo must not grow without limit.
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100_000))


STATE = _State()


def account_for_access_key(access_key: str) -> str:
    # moto keeps the access keys it issued (IAM users, STS AssumeRole) per account.
    from moto.iam.models import get_account_id_from

    return get_account_id_from(access_key)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, default=str), status=status, content_type="application/x-amz-json-1.1")


def aws_error(code: str, message: str, status: int = 400) -> Response:
    return json_response({"__type": code, "message": message}, status=status)


def _query_action(environ: dict[str, Any]) -> str:
    """The Action of a query-protocol request (STS, IAM, SNS, EC2, RDS: a form POST), or ''.

    The body is read once and put back for moto, which reads it again."""
    if "application/x-www-form-urlencoded" not in environ.get("CONTENT_TYPE", ""):
        return parse_qs(environ.get("QUERY_STRING", "")).get("Action", [""])[0]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]


class EmulatorApp:
    def __init__(self) -> None:
        self.moto = DomainDispatcherApplication(create_backend_app)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_kmsdash/"):
            return self._control(Request(environ))(environ, start_response)

        target = environ.get("HTTP_X_AMZ_TARGET", "")
        match = _CREDENTIAL_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
        access_key, region, service = match.groups() if match else ("", "", "")
        method = environ.get("REQUEST_METHOD", "")
        action = _query_action(environ)
        # Query-protocol calls (IAM, STS, SNS, EC2, RDS) are named by their Action, so that faults
        # and the request log name the operation.
        operation = target or (f"{service}:{action}" if action else f"{service}:{method} {path}")
        entry = {
            "time": time.time(),
            "target": operation,
            "access_key": access_key,
            "region": region,
            "user_agent": environ.get("HTTP_USER_AGENT", ""),
            "service": service,
            "method": method,
            "path": path,
            "query": environ.get("QUERY_STRING", ""),
            "action": action,
        }
        with STATE.lock:
            STATE.requests.append(entry)
            fault = self._take_fault(operation)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.error:
                return aws_error(fault.error, fault.message, fault.status)(environ, start_response)

        handler = ADDONS.get(target)
        if handler is not None:
            request = Request(environ)
            try:
                body = json.loads(request.get_data() or b"{}")
            except ValueError:
                body = {}
            call = Call(target=target, access_key=access_key, region=region, service=service, body=body)
            return handler(call)(environ, start_response)
        return self.moto(environ, start_response)

    def _take_fault(self, operation: str) -> Fault | None:
        for fault in STATE.faults:
            if fault.count > 0 and (fault.target == operation or operation.endswith(fault.target)):
                fault.count -= 1
                if fault.count == 0:
                    STATE.faults.remove(fault)
                return fault
        return None

    def _control(self, request: Request) -> Response:
        name = request.path[len("/_kmsdash/") :].strip("/")
        if name == "faults" and request.method == "POST":
            spec = request.get_json(force=True)
            with STATE.lock:
                STATE.faults.append(Fault(**spec))
            return json_response({"ok": True})
        if name == "requests":
            with STATE.lock:
                requests = list(STATE.requests)
            for entry in requests:
                entry["account"] = account_for_access_key(entry["access_key"]) if entry["access_key"] else ""
            return json_response(requests)
        if name == "reset" and request.method == "POST":
            with STATE.lock:
                STATE.faults.clear()
                STATE.requests.clear()
            for reset in RESETS:
                reset()
            return json_response({"ok": True})
        handler = CONTROLS.get(name)
        if handler is None:
            return json_response({"error": f"no control route {name!r}"}, status=404)
        return json_response(handler(request))


def load_addons() -> None:
    """Import the add-on modules so they register themselves."""
    import importlib
    import pkgutil

    import emulator

    for module in pkgutil.iter_modules(emulator.__path__):
        if module.name.startswith("addon_"):
            importlib.import_module(f"emulator.{module.name}")


class EmulatorServer:
    """The emulator in a background thread of this process (tests) or in the foreground (demo)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        # One line per request drowns test output and the demo's console.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        load_addons()
        self._server = make_server(host, port, EmulatorApp(), threaded=True, request_handler=MotoRequestHandler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"  # the port bound when 0 was asked

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        if self._thread:
            self._thread.join()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run the kmsdash AWS emulator (moto + add-ons).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055)
    args = parser.parse_args()
    server = EmulatorServer(args.host, args.port)
    print(f"kmsdash AWS emulator on {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    # Run the copy of this module that the add-ons register with (emulator.server), not __main__.
    from emulator.server import main as _main

    _main()
