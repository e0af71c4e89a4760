"""Admin over ingestion data: sources editable, everything ingested read-only, raw shown escaped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from audits.ingest import ingest_records, start_run
from audits.models import DailyRollup, Event, IngestRun, Quarantine, Source
from audits.synthetic import identity_role, kms_record


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    client.force_login(user)
    return client


@pytest.fixture
def evil_event(db):
    record = kms_record(
        event_name="Decrypt",
        event_time=datetime(2026, 3, 2, 12, tzinfo=UTC),
        key_arn="arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        identity=identity_role("111122223333", "app", "<script>alert(1)</script>"),
        region="us-east-1",
        recipient_account_id="111122223333",
        user_agent="<img src=x onerror=alert(2)>",
    )
    ingest_records([record, "{broken <b>"], run=start_run("files"), location="upload.json")
    return Event.objects.get()


@pytest.mark.django_db
def test_the_event_page_shows_the_raw_record_pretty_printed_and_escaped(admin_client, evil_event):
    response = admin_client.get(reverse("admin:audits_event_change", args=[evil_event.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "<img src=x" not in body and "<script>alert(1)" not in body
    assert "&lt;img src=x onerror=alert(2)&gt;" in body
    assert "\n  &quot;eventName&quot;: &quot;Decrypt&quot;" in body  # indented JSON
    assert 'name="_save"' not in body  # read-only


@pytest.mark.django_db
@pytest.mark.parametrize("model", [Event, DailyRollup, IngestRun, Quarantine])
def test_ingested_data_is_listed_but_cannot_be_added_changed_or_deleted(admin_client, evil_event, model):
    name = f"admin:audits_{model._meta.model_name}"
    assert admin_client.get(reverse(f"{name}_changelist")).status_code == 200
    assert admin_client.get(reverse(f"{name}_add")).status_code == 403
    obj = model.objects.first()
    assert admin_client.post(reverse(f"{name}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


@pytest.mark.django_db
def test_the_quarantine_list_escapes_the_rejected_text(admin_client, evil_event):
    row = Quarantine.objects.get()
    body = admin_client.get(reverse("admin:audits_quarantine_change", args=[row.pk])).content.decode()
    assert "{broken <b>" not in body and "{broken &lt;b&gt;" in body


@pytest.mark.django_db
def test_sources_are_editable(admin_client):
    response = admin_client.post(
        reverse("admin:audits_source_add"),
        {
            "account_id": "111122223333",
            "name": "prod",
            "regions": '["us-east-1"]',
            "role_arn": "",
            "external_id": "",
            "s3_bucket": "",
            "s3_prefix": "",
            "org_id": "",
            "lookup_enabled": "on",
            "enabled": "on",
        },
    )
    assert response.status_code == 302
    assert Source.objects.get().regions == ["us-east-1"]
