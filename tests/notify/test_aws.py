"""Against the AWS emulator over real HTTP: SNS delivery read back from an SQS subscription, and
channel secrets envelope-encrypted with a KMS key (never plain in the database)."""

from __future__ import annotations

import json

import boto3
import pytest
from django.core.management import call_command
from django.db import connection

from kmsdash.envelope import EnvelopeError, Sealed, seal, unseal
from notify.delivery import deliver_pending
from notify.models import Channel, Notification
from notify.services import notify_alert
from tests.notify.support import Receiver, hostile_alert, make_alert

pytestmark = [pytest.mark.django_db, pytest.mark.emulator]

REGION = "us-east-1"


@pytest.fixture
def kms_key(aws, settings):
    key = boto3.client("kms", region_name=REGION).create_key(Description="kmsdash channel secrets")["KeyMetadata"]
    settings.KMSDASH_SECRETS_KMS_KEY = key["Arn"]
    return key["Arn"]


def test_sns_delivery_reaches_an_sqs_subscription_with_the_alert_as_json(aws):
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="kms-alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="kms-alerts-reader")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    call_command("add_alert_channel", "sns", "--sns-topic", topic)

    alert = hostile_alert()
    notify_alert(alert, event="opened")
    assert deliver_pending().delivered == 1

    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert len(received) == 1
    envelope = json.loads(received[0]["Body"])
    notification = Notification.objects.get()
    assert envelope["TopicArn"] == topic
    assert envelope["Subject"].startswith("[kmsdash] ") and all(" " <= c <= "~" for c in envelope["Subject"])
    assert len(envelope["Subject"]) <= 100
    message = json.loads(envelope["Message"])
    assert message["delivery"] == str(notification.id) and message["alert"] == alert
    assert envelope["MessageAttributes"]["kmsdash_delivery"]["Value"] == str(notification.id)
    assert notification.delivery_attempts.get().status_code == 200


def test_a_missing_sns_topic_is_a_retried_failure_with_the_aws_error(aws):
    call_command("add_alert_channel", "sns", "--sns-topic", "arn:aws:sns:us-east-1:123456789012:nowhere")
    notify_alert(make_alert(), event="opened")
    assert deliver_pending().retrying == 1
    attempt = Notification.objects.get().delivery_attempts.get()
    assert attempt.ok is False and attempt.status_code == 404 and "NotFound" in attempt.error


def test_a_sealed_value_opens_only_with_its_own_context(kms_key):
    context = {"kmsdash:channel": "hook"}
    sealed = seal(b"top secret", key_id=kms_key, context=context)
    assert sealed.key_id == kms_key and b"top secret" not in sealed.ciphertext + sealed.encrypted_key
    assert unseal(sealed, context=context) == b"top secret"
    with pytest.raises(EnvelopeError):
        unseal(sealed, context={"kmsdash:channel": "other"})
    other = seal(b"another", key_id=kms_key, context=context)
    with pytest.raises(EnvelopeError):  # ciphertext moved onto another row's data key
        unseal(Sealed(kms_key, other.encrypted_key, sealed.ciphertext), context=context)


def test_sealing_without_a_configured_key_is_refused(aws, settings):
    settings.KMSDASH_SECRETS_KMS_KEY = ""
    with pytest.raises(EnvelopeError):
        seal(b"x", key_id="", context={})


def raw_row(name: str) -> bytes:
    """The channel's row as the database holds it, every column as bytes."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM notify_channel WHERE name = %s", [name])
        row = cursor.fetchone()
    return b"|".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row)


def test_a_generated_webhook_secret_is_sealed_in_the_database_and_signs_the_deliveries(kms_key, capsys):
    with Receiver() as receiver:
        call_command("add_alert_channel", "hook", "--webhook", receiver.url)
        secret = capsys.readouterr().out.split("(shown only now): ")[1].strip()
        assert len(secret) >= 40
        channel = Channel.objects.get()
        assert channel.secret_source() == f"encrypted with {kms_key}"
        assert secret.encode() not in raw_row("hook")
        assert channel.secret() == secret

        notify_alert(make_alert(), event="opened")
        assert deliver_pending().delivered == 1
    from notify.channels import sign

    assert receiver.requests[0]["headers"]["X-Kmsdash-Signature"] == sign(secret, receiver.requests[0]["body"])

    # Running the command again keeps the secret (and prints none).
    call_command("add_alert_channel", "hook", "--webhook", receiver.url)
    assert "shown only now" not in capsys.readouterr().out
    assert Channel.objects.get().secret() == secret


def test_an_apprise_url_is_sealed_and_shown_only_masked(kms_key, capsys):
    url = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    call_command("add_alert_channel", "chat", "--apprise", url, "--min-severity", "high")
    channel = Channel.objects.get()
    row = raw_row("chat")
    for token in (b"TIiajkdnlazkcOXrIdevi7FQ", b"A1BRTD4JD"):
        assert token not in row
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in channel.target and channel.target.startswith("slack://")
    assert channel.secret() == url
    before = channel.updated_at
    call_command("add_alert_channel", "chat", "--apprise", url, "--min-severity", "high")
    assert "Unchanged apprise channel chat." in capsys.readouterr().out
    assert Channel.objects.get().updated_at == before


def test_the_admin_never_shows_a_sealed_secret(kms_key, client):
    from django.urls import reverse

    from kmsdash.roles import ADMIN
    from tests.support import make_user

    url = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    call_command("add_alert_channel", "chat", "--apprise", url)
    client.force_login(make_user("boss", ADMIN))
    channel = Channel.objects.get()
    for page in (reverse("admin:notify_channel_changelist"), reverse("admin:notify_channel_change", args=[channel.pk])):
        html = client.get(page).content.decode()
        assert "TIiajkdnlazkcOXrIdevi7FQ" not in html and "A1BRTD4JD" not in html
    assert "encrypted with" in html

    # A new secret typed into the admin is sealed, never stored as typed.
    response = client.post(
        reverse("admin:notify_channel_add"),
        {
            "name": "hook",
            "type": "webhook",
            "target": "https://hooks.example.com/in",
            "kinds": "[]",
            "min_severity": "",
            "enabled": "on",
            "secret_env": "",
            "new_secret": "typed-in-admin-secret-123",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    refused = client.post(
        reverse("admin:notify_channel_add"),
        {
            "name": "unsigned",
            "type": "webhook",
            "target": "https://hooks.example.com/in",
            "kinds": "[]",
            "min_severity": "",
            "enabled": "on",
            "secret_env": "",
            "new_secret": "",
        },
    )
    assert refused.status_code == 200 and "needs its secret" in refused.content.decode()
    assert not Channel.objects.filter(name="unsigned").exists()
    assert b"typed-in-admin-secret-123" not in raw_row("hook")
    assert Channel.objects.get(name="hook").secret() == "typed-in-admin-secret-123"
