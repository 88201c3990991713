"""Field actions of a redaction policy: mask, pseudonymize, generalize, encrypt (docs/records.md).

Each action is bound once per policy field (key schedule, domain, associated data precomputed) and then
costs only its transform per value. AWS calls: none here; ``encrypt`` asks :class:`DataKeys` for the
batch's data key (one ``GenerateDataKey`` per batch and destination).

>>> mask("phone", "13812345678")
'138****5678'
>>> pseudonym(b"0123456789abcdef", "id_number", "11010519491231002X")[:3]
'pn_'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any, Final

from anfang.contracts import plate_province
from anfang.contracts.envelope import encryption_aad

from .keys import DataKeys

__all__ = ["PSEUDONYM_PREFIX", "encrypter", "generalize", "mask", "pseudonym", "pseudonymizer"]

PSEUDONYM_PREFIX: Final = "pn_"


def mask(kind: str, value: str) -> str:
    """Display masking: ID first 6 + last 4, mobile ``138****5678``, plate ``浙A****5``, text ``张*``."""
    if kind == "id_number" and len(value) == 18:
        return value[:6] + "*" * 8 + value[-4:]
    if kind == "phone" and len(value) == 11:
        return value[:3] + "****" + value[-4:]
    if kind == "plate":
        return value[:2] + "*" * (len(value) - 3) + value[-1:]
    return value[:1] + "*" * max(1, len(value) - 1)


def pseudonym(secret: bytes, domain: str, value: str) -> str:
    """A stable keyed token of ``value`` within ``domain`` (the field kind): ``pn_`` + 24 base64url characters.

    144 bits of HMAC-SHA256; base64url (C-accelerated) rather than hex, so a token practically never contains
    a run of digits that reads like a phone or ID number.
    """
    digest = hmac.new(secret, domain.encode() + b"\x00" + value.encode(), hashlib.sha256).digest()
    return PSEUDONYM_PREFIX + base64.urlsafe_b64encode(digest[:18]).decode("ascii")


_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def pseudonymizer(secret: bytes, domain: str) -> Callable[..., str]:
    """:func:`pseudonym` with the key and domain absorbed once.

    HMAC (RFC 2104) spelled out over two precomputed SHA-256 states, so a value costs two state copies and
    two compressions of C code and no Python-level ``hmac.HMAC`` object; the unit tests check it equals
    :func:`pseudonym`.
    """
    key = hashlib.sha256(secret).digest() if len(secret) > 64 else secret
    key = key.ljust(64, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(domain.encode() + b"\x00")
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    inner_copy, outer_copy, b2a = inner.copy, outer.copy, binascii.b2a_base64

    def apply(value: Any, _event_id: str = "", _keys: Any = None) -> str:  # also an _Op: no wrapper call
        mac = inner_copy()
        mac.update((value if type(value) is str else str(value)).encode())
        out = outer_copy()
        out.update(mac.digest())
        return PSEUDONYM_PREFIX + b2a(out.digest()[:18], newline=False).translate(_URLSAFE).decode("ascii")

    return apply


def generalize(kind: str, value: str) -> str:
    if kind == "plate":
        return plate_province(value)
    if kind == "id_number":
        return value[:6]  # the administrative division of registration
    return value[:3]  # phone: the carrier prefix


_EVENT_ID_SLOT: Final = "{event_id}"  # no JSON escapes: it stands for itself in the AAD
_PLAINTEXT_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_encode_str: Final[Callable[[str], str]] = json.encoder.encode_basestring


def encrypter(destination: str, field: str) -> Callable[[Any, str, DataKeys], dict[str, str]]:
    """Envelope encryption of one field for one destination; the AAD (:func:`encryption_aad`) is precomputed
    around the event id, so a value costs one JSON encode, one AES-GCM seal and two base64 encodes."""
    # Only the event id varies per record: split the AAD around it once. An EventId is a validated UUID
    # string, so its JSON form is itself in quotes (no escapes) and concatenation gives the same bytes.
    head, tail = encryption_aad(destination, _EVENT_ID_SLOT, field).split(_EVENT_ID_SLOT.encode())
    b2a = binascii.b2a_base64
    encode = _PLAINTEXT_ENCODER.encode  # json.dumps with options builds a new encoder on every call
    encode_str = _encode_str  # what encode() does for a str, without its Python-level dispatch

    def apply(value: Any, event_id: str, keys: DataKeys) -> dict[str, str]:
        key = keys.for_destination(destination)
        iv = key.next_nonce()
        plaintext = encode_str(value) if type(value) is str else encode(value)
        # an EventId is a validated UUID string: its JSON form is itself in quotes (no escapes)
        ct = key.aead.encrypt(iv, plaintext.encode(), head + event_id.encode() + tail)
        return {
            "enc": "A256GCM",
            "kid": key.kid,
            "edk": key.edk,
            "iv": b2a(iv, newline=False).decode(),
            "ct": b2a(ct, newline=False).decode(),
            "field": field,
        }

    return apply
