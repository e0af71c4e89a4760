"""Fixtures of the alert delivery tests (their plain helpers are in support.py)."""

from __future__ import annotations

import pytest
from celery.signals import before_task_publish

from kmsdash.celery import app


@pytest.fixture
def published():
    """Delivery passes queued, sent to an in-memory broker instead of the configured one."""
    sent: list[str] = []

    def record(sender=None, **kwargs):
        sent.append(sender)

    def fresh_pools():
        app._pool = None
        app.amqp._producer_pool = None

    previous = app.conf.broker_url
    app.conf.broker_url = "memory://"
    fresh_pools()
    before_task_publish.connect(record)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(record)
        app.conf.broker_url = previous
        fresh_pools()
