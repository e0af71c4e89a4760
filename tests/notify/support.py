"""Shared pieces of the alert delivery tests: hand-made alerts, a real HTTP receiver, hostile text."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Every kind of markup a field could try to smuggle into a page, an email or a chat message.
HOSTILE = (
    "<img src=x onerror=alert(1)> <!channel> <@U024BE7LH> <https://evil.example|click> "
    '[docs](https://evil.example/x) @here @everyone `code` "quote" & \u202eevil\u202c\nSubject: forged\r\nX: y'
)
FIELDS = (
    "kind",
    "severity",
    "state",
    "account",
    "region",
    "key",
    "principal",
    "error_code",
    "first_event",
    "last_event",
    "detected_at",
    "summary",
)


def make_alert(**overrides) -> dict:
    alert = {
        "id": 42,
        "kind": "critical-event",
        "severity": "high",
        "state": "open",
        "account": "111122223333",
        "region": "us-east-1",
        "key": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "principal": "arn:aws:iam::111122223333:role/Admin",
        "error_code": None,
        "first_event": "2026-12-01T03:00:00+00:00",
        "last_event": "2026-12-01T03:00:00+00:00",
        "detected_at": "2026-12-01T03:04:00+00:00",
        "count": 1,
        "observed": None,
        "baseline": None,
        "threshold": None,
        "summary": "ScheduleKeyDeletion of key 1234abcd by Admin",
        "url": "/alerts/42/",
    }
    alert.update(overrides)
    return alert


def hostile_alert() -> dict:
    return make_alert(
        **{name: f"{name} {HOSTILE}" for name in FIELDS}, count=10, observed=5.5, baseline=1.0, threshold=3.0
    )


class Receiver:
    """A real HTTP server on 127.0.0.1 in a thread. `plan` lists the answers to give in turn (a
    status code, or "stall": hold the request until released); after it, 200."""

    def __init__(self, plan=()) -> None:
        self.plan = list(plan)
        self.requests: list[dict] = []
        self.release = threading.Event()
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                answer = receiver.plan.pop(0) if receiver.plan else 200
                receiver.arrived.set()
                if answer == "stall":
                    receiver.release.wait(60)
                    answer = 200
                self.send_response(answer)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def json(self, index: int = -1) -> dict:
        return json.loads(self.requests[index]["body"])
