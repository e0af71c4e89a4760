"""Each detection's defaults, and the effective rule: the defaults with the admin's overrides.

The README's "Alerts" section documents every value here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from .models import AlertRule, Kind

DEFAULTS: dict[str, dict[str, Any]] = {
    Kind.CRITICAL_EVENT: {
        # Successful calls of these operations alert, with this severity each.
        "operations": {
            "ScheduleKeyDeletion": "critical",
            "DeleteImportedKeyMaterial": "critical",
            "DisableKey": "high",
            "PutKeyPolicy": "high",
            "DisableKeyRotation": "medium",
            "ImportKeyMaterial": "medium",
            "UpdateAlias": "medium",
            "DeleteAlias": "medium",
            "UpdatePrimaryRegion": "medium",
            "CancelKeyDeletion": "medium",
        },
        # Grants created or retired by AWS services on the caller's behalf (invokedBy).
        "include_routine": False,
    },
    Kind.KEY_EXPOSED: {"public_severity": "critical", "foreign_account_severity": "high"},
    Kind.FAILURE_BURST: {"min_count": 20, "mad_factor": 6, "ratio": 3, "severity": "high"},
    Kind.VOLUME_SPIKE: {"min_count": 100, "mad_factor": 6, "ratio": 3, "severity": "medium"},
    Kind.AFTER_HOURS_UNUSUAL: {"min_count": 1, "severity": "medium"},
    Kind.NEW_PRINCIPAL: {
        "cross_account_severity": "high",
        "root_severity": "high",
        "iam_user_severity": "medium",
        # New roles of the key's own account stay a finding (new-principal, info), not an alert.
        "own_account_roles": False,
        "own_account_role_severity": "low",
    },
    Kind.FINDING: {"min_severity": "high"},
    # A minute whose rate (calls / 60) reaches `ratio` of its request quota (capacity/quotas.py).
    Kind.QUOTA_HEADROOM: {"ratio": 0.8, "severity": "high"},
    # ThrottlingException calls of an account and region in one minute, every quota together.
    Kind.THROTTLING: {"min_count": 10, "severity": "high"},
}
# Shared by every kind; a rule's config may override them too.
COMMON = {"resolve_after_hours": None}  # None: KMSDASH_ALERT_RESOLVE_HOURS


@dataclass(frozen=True)
class Rule:
    kind: str
    enabled: bool
    config: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.config[name]

    @property
    def resolve_after_hours(self) -> float:
        value = self.config.get("resolve_after_hours")
        return float(settings.KMSDASH_ALERT_RESOLVE_HOURS if value is None else value)


def effective(kind: str, row: AlertRule | None) -> Rule:
    config = copy.deepcopy({**COMMON, **DEFAULTS[kind]})
    if row is not None and isinstance(row.config, dict):
        for name, value in row.config.items():
            if isinstance(value, dict) and isinstance(config.get(name), dict):
                # A dict replaces the default whole: an operations list names exactly what alerts.
                config[name] = dict(value)
            else:
                config[name] = value
    return Rule(kind, row.enabled if row is not None else True, config)


def load() -> dict[str, Rule]:
    rows = {row.kind: row for row in AlertRule.objects.all()}
    return {kind: effective(kind, rows.get(kind)) for kind in Kind.values}
