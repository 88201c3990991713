"""KMS data keys of one batch for envelope encryption (AES-256-GCM), one per destination.

AWS calls: one ``kms:GenerateDataKey`` per destination that encrypts a field in the batch, none otherwise. A
refusal (disabled key, access denied, throttling past botocore's retries) is :class:`DataKeyError` for that
destination only, remembered for the rest of the batch: KMS is not asked again per event, and the other
destinations' keys are unaffected.

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

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .exceptions import DataKeyError, RedactError

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
        self._refused: dict[str, str] = {}  # destination -> why KMS refused its key in this batch

    def for_destination(self, destination: str) -> DataKey:
        """The batch's data key of ``destination``; raises :class:`DataKeyError` when KMS gives none."""
        key = self._keys.get(destination)
        if key is None:
            key_id = self._key_ids.get(destination)
            if not key_id:
                raise RedactError(f"policy {destination} encrypts a field but no KMS key is configured for it")
            refused = self._refused.get(destination)
            if refused is not None:
                raise DataKeyError(f"no data key for {destination} in this batch: {refused}")
            try:
                out = self._kms.generate_data_key(
                    KeyId=key_id, KeySpec="AES_256", EncryptionContext={"destination": destination}
                )
            except ClientError as exc:
                self._refused[destination] = str(exc.response.get("Error", {}).get("Code", "ClientError"))
                raise DataKeyError(f"no data key for {destination}: {self._refused[destination]}") from exc
            except BotoCoreError as exc:
                self._refused[destination] = type(exc).__name__
                raise DataKeyError(f"no data key for {destination}: {self._refused[destination]}") from exc
            key = DataKey(
                kid=out["KeyId"], edk=base64.b64encode(out["CiphertextBlob"]).decode(), aead=AESGCM(out["Plaintext"])
            )
            self._keys[destination] = key
        return key
