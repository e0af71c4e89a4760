"""The pure policy and trail-selector rules behind the policy findings."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from inventory import policy as pol

ACCOUNT = "111122223333"


def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(principal, action="kms:Decrypt", **extra):
    return {"Effect": "Allow", "Principal": principal, "Action": action, "Resource": "*", **extra}


def test_a_star_principal_without_condition_is_public():
    found = pol.public_statements(doc(allow("*")))
    assert [s.index for s in found] == [0]


def test_an_aws_star_principal_in_a_list_is_public():
    assert pol.public_statements(doc(allow({"AWS": ["arn:aws:iam::111122223333:root", "*"]})))


def test_a_public_statement_restricted_by_principal_org_id_is_not_public():
    restricted = allow("*", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}})
    assert pol.public_statements(doc(restricted)) == []


def test_condition_keys_are_matched_case_insensitively_and_kms_caller_account_restricts():
    restricted = allow({"AWS": "*"}, Condition={"StringEquals": {"kms:CallerAccount": ["111122223333"]}})
    lowercase = allow("*", Condition={"StringEquals": {"aws:sourceaccount": "111122223333"}})
    assert pol.public_statements(doc(restricted, lowercase)) == []


def test_a_negated_or_wildcard_condition_does_not_restrict():
    negated = allow("*", Condition={"StringNotEquals": {"aws:PrincipalOrgID": "o-abc123"}})
    wildcard = allow("*", Condition={"StringLike": {"aws:PrincipalAccount": "*"}})
    unrelated = allow("*", Condition={"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}})
    assert [s.index for s in pol.public_statements(doc(negated, wildcard, unrelated))] == [0, 1, 2]


def test_a_deny_statement_with_a_star_principal_is_not_public():
    assert pol.public_statements(doc({"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"})) == []


def test_kms_star_for_the_account_root_is_not_a_wildcard_finding():
    root = allow({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, action="kms:*")
    bare_root = allow({"AWS": ACCOUNT}, action="kms:*")
    assert pol.wildcard_action_grants(doc(root, bare_root), ACCOUNT) == []


def test_kms_star_for_a_role_is_a_wildcard_finding_naming_the_role():
    admin = allow({"AWS": f"arn:aws:iam::{ACCOUNT}:role/KeyAdmin"}, action=["kms:*"])
    star = allow({"AWS": f"arn:aws:iam::{ACCOUNT}:user/bob"}, action="*")
    found = pol.wildcard_action_grants(doc(admin, star), ACCOUNT)
    assert [(s.index, [str(p) for p in ps]) for s, ps in found] == [
        (0, [f"arn:aws:iam::{ACCOUNT}:role/KeyAdmin"]),
        (1, [f"arn:aws:iam::{ACCOUNT}:user/bob"]),
    ]


def test_the_root_of_another_account_with_kms_star_is_a_wildcard_finding():
    found = pol.wildcard_action_grants(doc(allow({"AWS": "arn:aws:iam::999988887777:root"}, action="kms:*")), ACCOUNT)
    assert len(found) == 1


def test_foreign_accounts_are_those_outside_the_known_ones():
    statements = doc(
        allow({"AWS": [f"arn:aws:iam::{ACCOUNT}:role/app", "arn:aws:iam::444455556666:role/etl"]}),
        allow({"AWS": "999988887777"}),
        allow({"Service": "s3.amazonaws.com"}),
    )
    found = pol.foreign_account_grants(statements, {ACCOUNT, "444455556666"})
    assert list(found) == ["999988887777"]
    assert [s.index for s in found["999988887777"]] == [1]


def test_who_can_use_lists_principals_of_usage_statements_only():
    statements = doc(
        allow({"AWS": "arn:aws:iam::111122223333:role/app"}, action=["kms:Decrypt", "kms:GenerateDataKey*"]),
        allow({"AWS": "arn:aws:iam::111122223333:role/auditor"}, action=["kms:Describe*", "kms:List*"]),
        allow({"Service": "logs.amazonaws.com"}, action="kms:Encrypt*"),
    )
    assert [p for p, _ in pol.who_can_use(statements)] == [
        "arn:aws:iam::111122223333:role/app",
        "Service:logs.amazonaws.com",
    ]


def test_unreadable_or_odd_policies_give_no_statements():
    assert pol.statements("not json") == []
    assert pol.statements("[]") == []
    assert pol.statements(None) == []
    single = pol.statements(json.dumps({"Statement": allow("*")}))
    assert len(single) == 1 and single[0].allows


def test_account_of_reads_bare_ids_and_iam_and_sts_arns_only():
    assert pol.account_of("111122223333") == "111122223333"
    assert pol.account_of("arn:aws:iam::111122223333:role/x") == "111122223333"
    assert pol.account_of("arn:aws:sts::444455556666:assumed-role/x/y") == "444455556666"
    assert pol.account_of("s3.amazonaws.com") == ""
    assert pol.account_of("*") == ""


def test_a_trail_logging_all_management_events_sees_kms():
    assert pol.trail_kms_gaps([{"ReadWriteType": "All", "IncludeManagementEvents": True}], []) == []
    assert (
        pol.trail_kms_gaps(
            [{"ReadWriteType": "All", "IncludeManagementEvents": True, "ExcludeManagementEventSources": []}], []
        )
        == []
    )


def test_a_trail_excluding_the_kms_source_or_logging_writes_only_is_blind():
    excluded = [
        {
            "ReadWriteType": "All",
            "IncludeManagementEvents": True,
            "ExcludeManagementEventSources": ["kms.amazonaws.com"],
        }
    ]
    write_only = [{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True}]
    no_management = [{"ReadWriteType": "All", "IncludeManagementEvents": False}]
    assert pol.trail_kms_gaps(excluded, []) == ["excludes kms.amazonaws.com"]
    assert pol.trail_kms_gaps(write_only, []) == ["logs only write events"]
    assert pol.trail_kms_gaps(no_management, []) == ["no management events"]


def test_advanced_selectors_excluding_kms_or_reads_are_blind_and_a_plain_one_is_not():
    def management(*fields):
        return [{"Name": "m", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}, *fields]}]

    assert pol.trail_kms_gaps(None, management()) == []
    assert pol.trail_kms_gaps(None, management({"Field": "eventSource", "NotEquals": ["kms.amazonaws.com"]})) == [
        "excludes kms.amazonaws.com"
    ]
    assert pol.trail_kms_gaps(None, management({"Field": "readOnly", "Equals": ["false"]})) == [
        "logs only write events"
    ]
    data_only = [{"Name": "d", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]}]}]
    assert pol.trail_kms_gaps(None, data_only) == ["no management events"]


restricting_keys = st.sampled_from(sorted(pol.RESTRICTING_CONDITION_KEYS))
account_ids = st.from_regex(r"\A\d{12}\Z", fullmatch=True)
star_principals = st.sampled_from(["*", {"AWS": "*"}, {"AWS": ["*"]}, {"AWS": ["arn:aws:iam::111122223333:root", "*"]}])


@given(principal=star_principals, key=restricting_keys, value=account_ids, upper=st.booleans())
def test_any_restricting_condition_makes_a_star_statement_not_public_and_removing_it_does(principal, key, value, upper):
    key = key.upper() if upper else key
    restricted = allow(principal, Condition={"StringEquals": {key: value}})
    assert pol.public_statements(doc(restricted)) == []
    unrestricted = allow(principal)
    assert len(pol.public_statements(doc(unrestricted))) == 1


selectors = st.fixed_dictionaries(
    {
        "ReadWriteType": st.sampled_from(["All", "ReadOnly", "WriteOnly"]),
        "IncludeManagementEvents": st.booleans(),
        "ExcludeManagementEventSources": st.lists(
            st.sampled_from(["kms.amazonaws.com", "rdsdata.amazonaws.com"]), unique=True
        ),
    }
)


@given(others=st.lists(selectors, max_size=4), position=st.integers(min_value=0, max_value=4))
def test_one_selector_logging_all_management_events_is_enough_whatever_the_others(others, position):
    full = {"ReadWriteType": "All", "IncludeManagementEvents": True, "ExcludeManagementEventSources": []}
    mixed = others[:position] + [full] + others[position:]
    assert pol.trail_kms_gaps(mixed, []) == []


@given(others=st.lists(selectors, min_size=1, max_size=4))
def test_without_an_all_events_selector_that_keeps_kms_the_trail_is_blind(others):
    sees_kms = any(
        s["IncludeManagementEvents"]
        and s["ReadWriteType"] != "WriteOnly"
        and "kms.amazonaws.com" not in s["ExcludeManagementEventSources"]
        for s in others
    )
    assert (pol.trail_kms_gaps(others, []) == []) == sees_kms
