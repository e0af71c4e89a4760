"""Usage types and prices: the one table the cost figures rest on."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costs.models import UsageClass
from costs.prices import classify_usage_type, free_tier_eligible, price, request_price_name


@pytest.mark.parametrize(
    ("usage_type", "usage_class", "region"),
    [
        ("us-east-1-KMS-Keys", UsageClass.KEY_MONTHS, "us-east-1"),
        ("us-east-1-KMS-Requests", UsageClass.SYMMETRIC, "us-east-1"),
        ("eu-west-2-KMS-Requests-Asymmetric", UsageClass.ASYMMETRIC, "eu-west-2"),
        ("ap-southeast-2-KMS-Requests-Asymmetric-RSA_2048", UsageClass.ASYMMETRIC, "ap-southeast-2"),
        ("us-east-1-KMS-Requests-GenerateDatakeyPair-RSA", UsageClass.ASYMMETRIC, "us-east-1"),
        ("us-gov-west-1-KMS-Requests-GenerateDatakeyPair-ECC", UsageClass.ASYMMETRIC, "us-gov-west-1"),
        ("Global-KMS-Requests", UsageClass.SYMMETRIC, "Global"),
        ("us-east-1-KMS-CustomKeyStore", UsageClass.OTHER, "us-east-1"),
        ("<img src=x onerror=alert(1)>-KMS-Requests", UsageClass.OTHER, ""),
        ("", UsageClass.OTHER, ""),
    ],
)
def test_usage_types_are_classified_with_their_region(usage_type, usage_class, region):
    kind = classify_usage_type(usage_type)
    assert (kind.usage_class, kind.region) == (usage_class, region)


@pytest.mark.parametrize(
    ("key_spec", "operation", "name", "per_10k"),
    [
        ("SYMMETRIC_DEFAULT", "Decrypt", "symmetric", "0.03"),
        ("HMAC_256", "GenerateMac", "symmetric", "0.03"),
        ("", "Encrypt", "symmetric", "0.03"),
        ("RSA_2048", "Sign", "asymmetric_rsa_2048", "0.03"),
        ("RSA_4096", "Decrypt", "asymmetric", "0.15"),
        ("ECC_NIST_P256", "Sign", "asymmetric", "0.15"),
        ("SYMMETRIC_DEFAULT", "GenerateDataKeyPair", "data_key_pair_ecc", "0.10"),
    ],
)
def test_requests_are_priced_by_key_spec_and_operation(key_spec, operation, name, per_10k):
    assert request_price_name(key_spec, operation) == name
    assert price(name) * 10_000 == Decimal(per_10k)


def test_only_symmetric_requests_get_the_free_tier():
    assert free_tier_eligible("symmetric")
    assert not any(free_tier_eligible(n) for n in ("asymmetric", "asymmetric_rsa_2048", "data_key_pair_ecc"))


def test_settings_override_single_prices_and_keep_the_rest(settings):
    settings.KMSDASH_PRICES = {"symmetric": "0.0000035", "ce_request": 0.02}
    assert price("symmetric") == Decimal("0.0000035")
    assert price("ce_request") == Decimal("0.02")
    assert price("key_month") == Decimal("1.00")
