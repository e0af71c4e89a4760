"""Raw records move from one zlib blob per event (version 1) into zstd blocks of many records.

The rows already stored are rewritten, BLOCK_RECORDS at a time in id order, so no record is lost;
the reverse rewrites them as version 1 blobs. Version 1's codec lives here, where it is still needed.
"""

import zlib

import django.db.models.deletion
from django.db import migrations, models

from audits import rawcodec

# Version 1 of audits/rawcodec.py: zlib (raw deflate) with this preset dictionary, after a byte 1.
_DICT_V1 = (
    b'{"eventVersion":"1.08","userIdentity":{"type":"AssumedRole","principalId":"AROA","arn":"arn:aws:sts::'
    b':assumed-role/","accountId":"","accessKeyId":"ASIA","sessionContext":{"sessionIssuer":{"type":"Role",'
    b'"principalId":"AROA","arn":"arn:aws:iam:::role/","accountId":"","userName":""},"webIdFederationData":{},'
    b'"attributes":{"creationDate":"T00:00:00Z","mfaAuthenticated":"false"}},"invokedBy":"amazonaws.com"},'
    b'"eventTime":"T00:00:00Z","eventSource":"kms.amazonaws.com","eventName":"Decrypt","awsRegion":"us-east-1",'
    b'"sourceIPAddress":"","userAgent":"aws-sdk-java/Boto3/aws-cli/","requestParameters":{"encryptionAlgorithm":'
    b'"SYMMETRIC_DEFAULT","keyId":"arn:aws:kms:us-east-1::key/","encryptionContext":{"aws:s3:arn":"arn:aws:s3:::"'
    b'},"keySpec":"AES_256","numberOfBytes":32},"responseElements":null,"requestID":"","eventID":"","readOnly":true,'
    b'"resources":[{"accountId":"","type":"AWS::KMS::Key","ARN":"arn:aws:kms:us-east-1::key/"}],"eventType":'
    b'"AwsApiCall","managementEvent":true,"recipientAccountId":"","eventCategory":"Management","tlsDetails":'
    b'{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"kms.'
    b'.amazonaws.com"},"sharedEventID":"","vpcEndpointId":"vpce-","errorCode":"AccessDenied","errorMessage":""}'
    b"GenerateDataKeyEncryptAWS InternalIAMUserarn:aws:iam:::user/AWSServices3.amazonaws.com"
)


def decode_v1(blob) -> bytes:
    blob = bytes(blob)
    if not blob:
        return b""
    if blob[0] != 1:
        raise ValueError(f"unknown raw record version {blob[0]}")
    decompressor = zlib.decompressobj(wbits=-15, zdict=_DICT_V1)
    return decompressor.decompress(blob[1:]) + decompressor.flush()


def encode_v1(text: bytes) -> bytes:
    if not text:
        return b""
    compressor = zlib.compressobj(level=6, wbits=-15, zdict=_DICT_V1)
    return b"\x01" + compressor.compress(text) + compressor.flush()


def _batches(queryset, size):
    last = 0
    while True:
        rows = list(queryset.filter(pk__gt=last).order_by("pk")[:size])
        if not rows:
            return
        yield rows
        last = rows[-1].pk


def blobs_to_blocks(apps, schema_editor):
    Event = apps.get_model("audits", "Event")
    RawBlock = apps.get_model("audits", "RawBlock")
    for events in _batches(Event.objects.only("pk", "raw"), rawcodec.BLOCK_RECORDS):
        # A v1 blob holds the record's compact JSON text, the same form a block keeps.
        texts = [decode_v1(e.raw) for e in events]
        block = RawBlock.objects.create(data=rawcodec.encode_block(texts))
        for index, event in enumerate(events):
            event.raw_block_id, event.raw_index = (block.pk, index) if texts[index] else (None, 0)
        Event.objects.bulk_update(events, ["raw_block", "raw_index"])


def blocks_to_blobs(apps, schema_editor):
    Event = apps.get_model("audits", "Event")
    RawBlock = apps.get_model("audits", "RawBlock")
    cache: dict[int, list[bytes]] = {}
    for events in _batches(Event.objects.only("pk", "raw_block", "raw_index"), rawcodec.BLOCK_RECORDS):
        for event in events:
            texts = b""
            if event.raw_block_id is not None:
                if event.raw_block_id not in cache:
                    cache.clear()
                    cache[event.raw_block_id] = rawcodec.decode_block(
                        RawBlock.objects.get(pk=event.raw_block_id).data
                    )
                block = cache[event.raw_block_id]
                texts = block[event.raw_index] if event.raw_index < len(block) else b""
            event.raw = encode_v1(texts)
        Event.objects.bulk_update(events, ["raw"])


class Migration(migrations.Migration):
    dependencies = [
        ("audits", "0005_backfill_key_reach_summaries"),
    ]

    operations = [
        migrations.CreateModel(
            name="RawBlock",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("data", models.BinaryField()),
            ],
        ),
        migrations.AddField(
            model_name="event",
            name="raw_index",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="event",
            name="raw_block",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="audits.rawblock",
            ),
        ),
        # Old rows must be rewritten before `raw` goes; the reverse needs `raw` back first, which
        # reversing RemoveField (below) gives it, with a default for the rows.
        migrations.AlterField(model_name="event", name="raw", field=models.BinaryField(default=b"")),
        # Elidable: a fresh database has no rows for it (see 0001_squashed_0014_quarantine_once).
        migrations.RunPython(blobs_to_blocks, blocks_to_blobs, elidable=True),
        migrations.RemoveField(model_name="event", name="raw"),
    ]
