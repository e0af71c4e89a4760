"""KMS prices and how Cost Explorer names them: the one place the product knows what KMS costs.

Figures are AWS's published US East prices (https://aws.amazon.com/kms/pricing/); settings'
KMSDASH_PRICES is merged over them, e.g. {"symmetric": "0.00000315"} for a pricier region.
Prices are per single request or per key-month, as Decimal strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from django.conf import settings

from audits.cloudtrail import DATA_KEY_PAIR_OPERATIONS

from .models import UsageClass

DEFAULT_PRICES: dict[str, str] = {
    # Key storage: $1 per key-month, prorated hourly; the first two rotations add $1 each.
    "key_month": "1.00",
    "rotation_month": "1.00",
    "billable_rotations": "2",
    # Per request (the pricing page quotes them per 10,000).
    "symmetric": "0.000003",  # $0.03 / 10k, also HMAC keys
    "asymmetric_rsa_2048": "0.000003",  # $0.03 / 10k
    "asymmetric": "0.000015",  # $0.15 / 10k: RSA 3072/4096, ECC, SM2, ML-DSA, ML-KEM
    "data_key_pair_ecc": "0.00001",  # $0.10 / 10k
    "data_key_pair_rsa": "0.0012",  # $12.00 / 10k
    # Free tier: symmetric requests per account and month, across all regions.
    "free_requests_per_month": "20000",
    # Cost Explorer API: each request (each page) is billed.
    "ce_request": "0.01",
}


def prices() -> dict[str, Decimal]:
    merged = {**DEFAULT_PRICES, **getattr(settings, "KMSDASH_PRICES", {})}
    return {name: Decimal(str(value)) for name, value in merged.items()}


def price(name: str) -> Decimal:
    return prices()[name]


# --- Usage types --------------------------------------------------------------------------------
# Cost Explorer's KMS usage types carry the full region code as a prefix:
#   us-east-1-KMS-Keys, us-east-1-KMS-Requests, us-east-1-KMS-Requests-Asymmetric,
#   us-east-1-KMS-Requests-Asymmetric-RSA_2048, us-east-1-KMS-Requests-GenerateDatakeyPair-RSA/-ECC,
# and the free tier is tracked as Global-KMS-Requests.
_USAGE_TYPE_RE = re.compile(r"^(?P<prefix>[A-Za-z0-9-]+?)-KMS-(?P<kind>.+)$")


@dataclass(frozen=True)
class UsageType:
    usage_class: str
    region: str


def classify_usage_type(usage_type: str) -> UsageType:
    """Usage class and region of a Cost Explorer usage type; unknown shapes are 'other'."""
    match = _USAGE_TYPE_RE.match(usage_type or "")
    if match is None:
        return UsageType(UsageClass.OTHER, "")
    region, kind = match["prefix"], match["kind"]
    if kind == "Keys":
        usage_class = UsageClass.KEY_MONTHS
    elif kind == "Requests":
        usage_class = UsageClass.SYMMETRIC
    elif kind.startswith("Requests-Asymmetric") or kind.startswith("Requests-GenerateDatakeyPair"):
        usage_class = UsageClass.ASYMMETRIC
    else:
        usage_class = UsageClass.OTHER
    return UsageType(usage_class, region[:32])


# --- Key specs and operations -------------------------------------------------------------------


@lru_cache(maxsize=1024)
def request_price_name(key_spec: str, operation: str) -> str:
    """Which price a request pays, from the key's spec and the operation.

    CloudTrail rollups do not keep a GenerateDataKeyPair's KeyPairSpec, so those requests are
    priced as ECC pairs; the reconciliation with Cost Explorer shows any difference.
    """
    if operation in DATA_KEY_PAIR_OPERATIONS:
        return "data_key_pair_ecc"
    spec = (key_spec or "SYMMETRIC_DEFAULT").upper()
    if spec == "SYMMETRIC_DEFAULT" or spec.startswith("HMAC_"):
        return "symmetric"
    if spec == "RSA_2048":
        return "asymmetric_rsa_2048"
    return "asymmetric"


def free_tier_eligible(price_name: str) -> bool:
    # Asymmetric keys and data key pairs are excluded from the free tier.
    return price_name == "symmetric"
