"""The key page's "who can" panel and the principal page: who may open them, what they show, and
that attacker-chosen text stays text."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from access import ingest
from access.models import IamRun
from audits import synthetic
from audits.ingest import finish_run, ingest_records, start_run
from audits.keyurls import key_access_url, principal_url
from inventory.models import Key

pytestmark = pytest.mark.django_db

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/11111111-1111-4111-8111-111111111111"
HOSTILE = "<img src=x onerror=alert(1)>"
DECRYPT_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}


def user(username: str, *groups: str) -> User:
    made = User.objects.create_user(username, password="x")
    for name in groups:
        made.groups.add(Group.objects.get_or_create(name=name)[0])
    return made


def calls(role: str, *names: str) -> None:
    run = start_run("files")
    records = [
        synthetic.kms_record(
            event_name=name,
            event_time=timezone.now() - timedelta(hours=i + 1),
            key_arn=KEY,
            identity=synthetic.identity_role(ACCOUNT, role, "s1"),
            region="us-east-1",
            recipient_account_id=ACCOUNT,
        )
        for i, name in enumerate(names)
    ]
    finish_run(run, ingest_records(records, run=run))


def key() -> Key:
    return Key.objects.create(
        arn=KEY, key_id=KEY.rsplit("/", 1)[1], account_id=ACCOUNT, region="us-east-1", last_seen_at=timezone.now()
    )


def store_iam(roles: list[dict], *, scps=None, note="SCPs not evaluated: this account cannot read them (x).") -> None:
    details = {"UserDetailList": [], "GroupDetailList": [], "RoleDetailList": roles, "Policies": []}
    snapshot = ingest.IamSnapshot(ACCOUNT, details, scps, note, pages=1)
    ingest.store_snapshot(snapshot, IamRun.objects.create(account_id=ACCOUNT))


def role(name: str, **extra) -> dict:
    return {"RoleName": name, "Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}", "RolePolicyList": [], **extra}


@pytest.mark.parametrize(
    "url", [lambda: key_access_url(KEY), lambda: principal_url(f"arn:aws:iam::{ACCOUNT}:role/app")]
)
def test_the_access_pages_need_a_login_and_the_analyst_role(client, url):
    key()
    calls("app", "Decrypt")
    path = url()
    assert path is not None
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(user("nobody"))
    assert client.get(path).status_code == 403
    client.force_login(user("finance", "finance"))
    assert client.get(path).status_code == 403
    client.force_login(user("ana", "analyst"))
    assert client.get(path).status_code == 200


def test_the_principal_page_shows_its_iam_policies_and_what_it_does_use(client):
    key()
    calls("app", "Decrypt", "Decrypt", "Encrypt")
    store_iam([role("app", RolePolicyList=[{"PolicyName": "decrypt-all", "PolicyDocument": DECRYPT_ALL}])])
    client.force_login(user("ana", "analyst"))

    response = client.get(principal_url(f"arn:aws:iam::{ACCOUNT}:role/app"))

    page = response.content.decode()
    assert response.status_code == 200
    assert "decrypt-all" in page and "(role)" in page
    does = page.split('id="does-use"', 1)[1].split("</section>", 1)[0]
    assert "Decrypt" in does and "Encrypt" in does
    assert ">2<" in does  # two Decrypt calls, from the rollups


def test_a_principal_kmsdash_knows_nothing_of_is_not_found(client):
    client.force_login(user("ana", "analyst"))
    assert client.get(principal_url(f"arn:aws:iam::{ACCOUNT}:role/nobody")).status_code == 404


def test_a_hostile_principal_name_from_cloudtrail_stays_text(client):
    key()
    calls(HOSTILE, "Decrypt")
    client.force_login(user("ana", "analyst"))
    url = principal_url(f"arn:aws:iam::{ACCOUNT}:role/{HOSTILE}")
    assert url is not None

    page = client.get(url).content.decode()

    assert HOSTILE not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_a_principal_whose_name_no_path_can_carry_gets_no_link():
    assert principal_url(f"arn:aws:iam::{ACCOUNT}:role/../../health") is None


def test_the_who_can_panel_says_when_iam_was_not_read_and_when_scps_were_not_evaluated(client):
    key()
    client.force_login(user("ana", "analyst"))

    before = client.get(key_access_url(KEY)).content.decode()
    store_iam([role("app")])
    after = client.get(key_access_url(KEY)).content.decode()

    assert "IAM has not been read for account" in before
    assert "IAM has not been read" not in after
    assert "SCPs not evaluated: this account cannot read them" in after


def test_the_key_page_loads_the_who_can_panel(client):
    key()
    calls("app", "Decrypt")
    client.force_login(user("ana", "analyst"))
    page = client.get(f"/keys/{KEY}/").content.decode()
    assert f'hx-get="{key_access_url(KEY)}"' in page
