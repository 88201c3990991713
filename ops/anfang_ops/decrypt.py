"""Turn a police record's envelopes back into values (``anfang decrypt``), for holders of ``kms:Decrypt``.

Each envelope's data key is decrypted once with KMS under the destination's encryption context (a batch
shares one data key, so a file of records costs about one KMS call per batch); the AES-GCM associated data
binds it to its destination, event and field, so a moved or altered envelope fails instead of decrypting.

>>> plain = decrypt_record(json.loads(line), kms=boto3.client("kms"))
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from anfang.contracts.envelope import encryption_aad

__all__ = ["DecryptError", "Decryptor", "decrypt_lines", "decrypt_record", "is_envelope"]

_ENVELOPE_KEYS = frozenset({"enc", "kid", "edk", "iv", "ct", "field"})


class DecryptError(Exception):
    """An envelope that does not decrypt (wrong key, wrong context, altered bytes)."""

    code = "decrypt_failed"


def is_envelope(value: Any) -> bool:
    """Whether a JSON value is an encrypted-field envelope."""
    return isinstance(value, dict) and value.keys() == _ENVELOPE_KEYS and value.get("enc") == "A256GCM"


class Decryptor:
    """Decrypts envelopes, caching data keys by their encrypted form."""

    def __init__(self, kms: Any) -> None:
        self._kms = kms
        self._keys: dict[tuple[str, str], AESGCM] = {}

    def _aead(self, envelope: dict[str, str], destination: str) -> AESGCM:
        cache_key = (envelope["edk"], destination)
        aead = self._keys.get(cache_key)
        if aead is None:
            try:
                out = self._kms.decrypt(
                    CiphertextBlob=base64.b64decode(envelope["edk"]),
                    KeyId=envelope["kid"],
                    EncryptionContext={"destination": destination},
                )
            except Exception as exc:  # botocore ClientError and friends: report as a typed error
                raise DecryptError(f"KMS refused the data key of {envelope['field']}: {exc}") from exc
            aead = AESGCM(out["Plaintext"])
            self._keys[cache_key] = aead
        return aead

    def value(self, envelope: dict[str, str], *, destination: str, event_id: str) -> Any:
        """The value sealed in one envelope."""
        aead = self._aead(envelope, destination)
        try:
            plain = aead.decrypt(
                base64.b64decode(envelope["iv"]),
                base64.b64decode(envelope["ct"]),
                encryption_aad(destination, event_id, envelope["field"]),
            )
        except InvalidTag as exc:
            raise DecryptError(f"envelope {envelope['field']} of {event_id} does not decrypt") from exc
        return json.loads(plain)

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``record`` with every envelope replaced by its value."""
        destination = str(record["redaction"]["policy"]).split("@", 1)[0]
        event_id = str(record["event_id"])

        def walk(node: Any, path: str) -> Any:
            if is_envelope(node):
                # The envelope must sit where it was sealed: its claimed field is checked against its place,
                # and its place is what the associated data binds.
                if node["field"] != path:
                    raise DecryptError(f"envelope sealed for {node['field']} found at {path}")
                return self.value(node, destination=destination, event_id=event_id)
            if isinstance(node, dict):
                return {key: walk(value, f"{path}.{key}" if path else key) for key, value in node.items()}
            if isinstance(node, list):
                return [walk(value, path) for value in node]
            return node

        result: dict[str, Any] = walk(record, "")
        return result


def decrypt_record(record: dict[str, Any], *, kms: Any) -> dict[str, Any]:
    """``record`` with its envelopes decrypted (one KMS call per distinct data key)."""
    return Decryptor(kms).record(record)


def decrypt_lines(lines: Iterable[str], *, kms: Any) -> Iterator[str]:
    """Decrypt NDJSON records line by line (blank lines are skipped)."""
    decryptor = Decryptor(kms)
    for line in lines:
        if line.strip():
            yield json.dumps(decryptor.record(json.loads(line)), ensure_ascii=False, separators=(",", ":"))
