"""Ed25519 keys as the registry and the edge agent exchange them, and their key ids."""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "generate_private_key",
    "key_id_for",
    "load_private_key",
    "load_public_key",
    "private_key_to_pem",
    "public_key_to_pem",
    "public_key_to_text",
]


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_private_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """The key id of a public key: its RFC 7638 JWK thumbprint (base64url SHA-256, 43 characters).

    Derived, so a device and the registry agree on it without a round trip, and it names exactly one key.
    """
    jwk = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw_public(public_key))}, separators=(",", ":"))
    return _b64url(hashlib.sha256(jwk.encode("ascii")).digest())


def public_key_to_text(public_key: Ed25519PublicKey) -> str:
    """The 32 raw public key bytes as unpadded base64url: what ``anfang-edge keys gen`` prints."""
    return _b64url(_raw_public(public_key))


def public_key_to_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(
        "ascii"
    )


def private_key_to_pem(private_key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (protect the file; systemd ``LoadCredential`` on gateways)."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_public_key(data: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or from 32 raw bytes in base64/base64url."""
    text = data.decode("ascii") if isinstance(data, bytes) else data
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode("ascii"))
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("public key is not Ed25519")
        return key
    try:
        raw = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise ValueError("public key is neither PEM nor base64") from exc
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from unencrypted PKCS#8 PEM."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("private key is not Ed25519")
    return key
