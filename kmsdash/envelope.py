"""Envelope encryption of small secrets with a KMS key: the only way a secret rests in the database.

`seal` asks KMS for a fresh AES-256 data key (GenerateDataKey, bound to an encryption context),
encrypts locally with AES-256-GCM and keeps only the KMS-encrypted copy of the data key beside
the ciphertext; the plaintext key lives in memory for one call. `unseal` has KMS decrypt the data
key under the same context (a sealed value moved to another context does not open) and decrypts.
The context is also the GCM associated data, so a ciphertext swapped between two rows fails
locally even if someone re-wrapped the data keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsdash import aws

NONCE_BYTES = 12


class EnvelopeError(Exception):
    """The value cannot be sealed or opened (no key configured, wrong context, tampered data)."""


@dataclass(frozen=True)
class Sealed:
    key_id: str  # the ARN of the KMS key that wrapped the data key
    encrypted_key: bytes  # KMS CiphertextBlob of the data key
    ciphertext: bytes  # 12-byte nonce + AES-GCM ciphertext and tag


def _region(key_id: str) -> str:
    if key_id.startswith("arn:"):
        return key_id.split(":")[3]
    return os.getenv("AWS_REGION") or os.getenv("AWS_DEFAULT_REGION") or "us-east-1"


def _aad(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


def seal(plaintext: bytes, *, key_id: str, context: dict[str, str]) -> Sealed:
    if not key_id:
        raise EnvelopeError("no KMS key to encrypt with (set KMSDASH_SECRETS_KMS_KEY)")
    kms = aws.client("kms", _region(key_id), max_attempts=3)
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=context)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key["Plaintext"]).encrypt(nonce, plaintext, _aad(context))
    return Sealed(key_id=data_key["KeyId"], encrypted_key=data_key["CiphertextBlob"], ciphertext=nonce + ciphertext)


def unseal(sealed: Sealed, *, context: dict[str, str]) -> bytes:
    kms = aws.client("kms", _region(sealed.key_id), max_attempts=3)
    try:
        data_key = kms.decrypt(
            CiphertextBlob=bytes(sealed.encrypted_key), KeyId=sealed.key_id, EncryptionContext=context
        )["Plaintext"]
    except ClientError as exc:
        raise EnvelopeError(f"KMS refused to decrypt the data key: {aws.error_code(exc)}") from exc
    blob = bytes(sealed.ciphertext)
    try:
        return AESGCM(data_key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(context))
    except InvalidTag as exc:
        raise EnvelopeError("the ciphertext does not match its key and context") from exc
