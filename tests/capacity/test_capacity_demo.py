"""The demo world shows a region near its (demo-overridden) quota, with throttling."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from audits.ingest import ingest_records, start_run
from capacity import selectors
from capacity.quotas import parse_overrides
from demo.activity import DEMO_QUOTAS, generate_activity, placeholder_keys

END = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_prods_eu_west_1_comes_near_its_demo_quota_and_is_throttled(settings):
    settings.KMSDASH_KMS_QUOTAS = parse_overrides(json.dumps(DEMO_QUOTAS))
    ingest_records(generate_activity(placeholder_keys(), end=END, days=2), run=start_run("files"))

    scopes = {(s["account"], s["region"], s["class"]): s for s in selectors.report(None, None)["scopes"]}
    near = scopes[("111122223333", "eu-west-1", "symmetric")]
    assert near["quota"] == 10.0
    assert 0.85 <= near["peak_rate"] / near["quota"] < 1.0
    assert near["throttled"] >= 20
    assert near["top_keys"][0]["key"].startswith("arn:aws:kms:eu-west-1:111122223333:key/")
    # Everywhere else the published defaults leave plenty of room; the signing key counts as RSA.
    others = [s for key, s in scopes.items() if key != ("111122223333", "eu-west-1", "symmetric") and s["quota"]]
    assert others and all(s["peak_rate"] / s["quota"] < 0.1 for s in others)
    assert any(s["class"] == "rsa" for s in scopes.values())
