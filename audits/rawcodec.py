"""Compact storage of raw CloudTrail records.

A KMS record is 1-2 KB of JSON, most of it the same field names and values in every record.
zlib with a preset dictionary of that common text stores it in a fraction of the size that
plain zlib reaches on such short inputs. The first byte names the dictionary, so it can evolve
without rewriting stored rows.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

# Version 1: field names and frequent values of KMS CloudTrail records. Never edit in place:
# add a version 2 and keep this one for the rows already stored.
_DICT_V1 = (
    '{"eventVersion":"1.08","userIdentity":{"type":"AssumedRole","principalId":"AROA","arn":"arn:aws:sts::'
    ':assumed-role/","accountId":"","accessKeyId":"ASIA","sessionContext":{"sessionIssuer":{"type":"Role",'
    '"principalId":"AROA","arn":"arn:aws:iam:::role/","accountId":"","userName":""},"webIdFederationData":{},'
    '"attributes":{"creationDate":"T00:00:00Z","mfaAuthenticated":"false"}},"invokedBy":"amazonaws.com"},'
    '"eventTime":"T00:00:00Z","eventSource":"kms.amazonaws.com","eventName":"Decrypt","awsRegion":"us-east-1",'
    '"sourceIPAddress":"","userAgent":"aws-sdk-java/Boto3/aws-cli/","requestParameters":{"encryptionAlgorithm":'
    '"SYMMETRIC_DEFAULT","keyId":"arn:aws:kms:us-east-1::key/","encryptionContext":{"aws:s3:arn":"arn:aws:s3:::"'
    '},"keySpec":"AES_256","numberOfBytes":32},"responseElements":null,"requestID":"","eventID":"","readOnly":true,'
    '"resources":[{"accountId":"","type":"AWS::KMS::Key","ARN":"arn:aws:kms:us-east-1::key/"}],"eventType":'
    '"AwsApiCall","managementEvent":true,"recipientAccountId":"","eventCategory":"Management","tlsDetails":'
    '{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"kms.'
    '.amazonaws.com"},"sharedEventID":"","vpcEndpointId":"vpce-","errorCode":"AccessDenied","errorMessage":""}'
    "GenerateDataKeyEncryptAWS InternalIAMUserarn:aws:iam:::user/AWSServices3.amazonaws.com"
).encode()
_DICTS = {1: _DICT_V1}
CURRENT = 1


def encode(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")
    compressor = zlib.compressobj(level=6, wbits=-15, zdict=_DICTS[CURRENT])
    return bytes([CURRENT]) + compressor.compress(text) + compressor.flush()


def decode(blob: bytes | memoryview) -> dict[str, Any]:
    blob = bytes(blob)
    decompressor = zlib.decompressobj(wbits=-15, zdict=_DICTS[blob[0]])
    return json.loads(decompressor.decompress(blob[1:]) + decompressor.flush())
