"""KMS data keys of one batch for envelope encryption (AES-256-GCM), one per destination.

AWS calls: one ``kms:GenerateDataKey`` per destination that encrypts a field in the batch, none otherwise.

>>> keys = DataKeys(kms_client, {"police_video": police_key_arn})
>>> key = keys.for_destination("police_video")       # GenerateDataKey on first use, then cached
>>> key.aead.encrypt(key.next_nonce(), b"plaintext", aad)
"""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .exceptions import RedactError

__all__ = ["DataKey", "DataKeys"]


class DataKey:
    """One data key of one batch and destination, with its AES-GCM nonce sequence.

    Nonces are deterministic (NIST SP 800-38D 8.2.1): a random 4-byte fixed field and a 64-bit counter, so
    no two envelopes under one key share a nonce (random 96-bit nonces only make a repeat unlikely), and a
    field costs no ``getrandom`` system call.
    """

    __slots__ = ("aead", "edk", "kid", "next_nonce")

    def __init__(self, kid: str, edk: str, aead: AESGCM) -> None:
        self.kid, self.edk, self.aead = kid, edk, aead
        fixed = os.urandom(4)
        counter = itertools.count(1)
        self.next_nonce: Callable[[], bytes] = lambda: fixed + next(counter).to_bytes(8, "big")


class DataKeys:
    """One KMS data key per destination for one batch, generated on first use (``GenerateDataKey``)."""

    def __init__(self, kms: Any, key_ids: Mapping[str, str]) -> None:
        self._kms = kms
        self._key_ids = dict(key_ids)
        self._keys: dict[str, DataKey] = {}

    def for_destination(self, destination: str) -> DataKey:
        key = self._keys.get(destination)
        if key is None:
            key_id = self._key_ids.get(destination)
            if not key_id:
                raise RedactError(f"policy {destination} encrypts a field but no KMS key is configured for it")
            out = self._kms.generate_data_key(
                KeyId=key_id, KeySpec="AES_256", EncryptionContext={"destination": destination}
            )
            key = DataKey(
                kid=out["KeyId"], edk=base64.b64encode(out["CiphertextBlob"]).decode(), aead=AESGCM(out["Plaintext"])
            )
            self._keys[destination] = key
        return key
