"""KMSDASH_KMS_QUOTAS: overrides of AWS's default request quotas, refused at start-up when wrong."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from capacity.quotas import QuotaConfigError, default_quota, parse_overrides, quota
from kmsdash.settings import parse_kms_quotas
from tests.support import manage_py


def test_the_published_defaults_differ_by_region_and_class():
    assert default_quota("us-east-1", "symmetric") == 100_000
    assert default_quota("eu-central-1", "symmetric") == 20_000
    assert default_quota("sa-east-1", "symmetric") == 10_000
    assert (default_quota("sa-east-1", "rsa"), default_quota("sa-east-1", "ecc")) == (1_000, 1_000)
    assert default_quota("sa-east-1", "custom-key-store") == 1_800
    assert default_quota("sa-east-1", "DescribeKey") == 2_000
    assert default_quota("sa-east-1", "GenerateDataKeyPair RSA_4096") == 1
    assert default_quota("sa-east-1", "PutKeyPolicy") is None


def test_the_most_specific_override_wins():
    overrides = parse_overrides(
        '{"111122223333:eu-west-1:symmetric": 25000, "111122223333:*:symmetric": 15000,'
        ' "*:eu-west-1:rsa": 2000, "*:*:ecc": 3000}'
    )
    assert quota("111122223333", "eu-west-1", "symmetric", overrides) == 25_000
    assert quota("111122223333", "us-east-2", "symmetric", overrides) == 15_000
    assert quota("444455556666", "us-east-2", "symmetric", overrides) == 20_000  # the default
    assert quota("444455556666", "eu-west-1", "rsa", overrides) == 2_000
    assert quota("444455556666", "ap-south-1", "ecc", overrides) == 3_000
    assert parse_overrides("") == {}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"111122223333:eu-west-1:sym": 10}', "'111122223333:eu-west-1:sym': unknown class 'sym'"),
        (
            '{"111122223333:eu-west-1:symmetric": 0}',
            "'111122223333:eu-west-1:symmetric': the rate must be a positive number",
        ),
        ('{"*:*:rsa": -5}', "'*:*:rsa': the rate must be a positive number"),
        ('{"*:*:rsa": "1000"}', "'*:*:rsa': the rate must be a positive number"),
        ('{"*:*:rsa": true}', "'*:*:rsa': the rate must be a positive number"),
        ('{"12345:eu-west-1:rsa": 5}', "'12345:eu-west-1:rsa': the key must be"),
        ('{"eu-west-1:rsa": 5}', "'eu-west-1:rsa': the key must be"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_entry(text, named):
    with pytest.raises(QuotaConfigError, match=named.replace("(", r"\(").replace("*", r"\*")):
        parse_overrides(text)
    with pytest.raises(ImproperlyConfigured):
        parse_kms_quotas(text)


@pytest.mark.slow
def test_the_process_refuses_to_start_with_a_bad_override():
    bad = manage_py("check", KMSDASH_KMS_QUOTAS='{"111122223333:eu-west-1:symetric": 25000}')
    assert bad.returncode != 0
    assert "111122223333:eu-west-1:symetric" in bad.stderr and "unknown class" in bad.stderr
    good = manage_py("check", KMSDASH_KMS_QUOTAS='{"111122223333:eu-west-1:symmetric": 25000}')
    assert good.returncode == 0, good.stderr
