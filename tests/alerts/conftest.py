"""Fixtures of the alerts tests (records and history are in support.py)."""

from __future__ import annotations

import pytest

from tests.alerts.support import Recorder


@pytest.fixture
def notified(monkeypatch, django_capture_on_commit_callbacks) -> Recorder:
    import notify.services

    recorder = Recorder(django_capture_on_commit_callbacks)
    monkeypatch.setattr(notify.services, "notify_alert", lambda alert, *, event: recorder.calls.append((event, alert)))
    return recorder
