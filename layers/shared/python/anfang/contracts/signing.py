"""The request-signing profile of anfang: RFC 9421 HTTP Message Signatures with Ed25519 (docs/api.md, "Authentication").

Covered components, in order: ``"@method" "@path" "content-digest" "content-type"``; parameters
``created``, ``keyid`` and ``nonce``; label ``sig1``; ``Content-Digest`` (RFC 9530, sha-256) over the raw
body bytes. The algorithm comes from the registry entry of the key, never from the request.

Why this module builds the signature base itself instead of wrapping ``http-message-signatures``: that
library verifies any covered-component set and reports every failure as one ``InvalidSignature`` with an
English message, while this profile needs one fixed component list and a stable error code per failure
(expired, replayed, unknown or revoked key, digest). Wrapping it would mean parsing Signature-Input
ourselves first anyway, and the edge agent would carry ``http-sf`` for nothing. The profile's signature
base (RFC 9421 section 2.5) is four lines plus ``@signature-params``; the test suite checks it both ways
against ``http-message-signatures`` as an independent implementation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .limits import NONCE_MIN_BYTES, NONCE_TTL_SECS, SIGNATURE_MAX_AGE_SECS, SIGNATURE_MAX_SKEW_SECS
from .problems import ErrorCode, SignatureError
from .types import Role

__all__ = [
    "COVERED_COMPONENTS",
    "SIGNATURE_LABEL",
    "KeyInfo",
    "KeyResolver",
    "MemoryNonceStore",
    "NonceStore",
    "Signer",
    "VerifiedRequest",
    "Verifier",
    "authorize",
    "content_digest",
    "signature_base",
]

COVERED_COMPONENTS: Final = ("@method", "@path", "content-digest", "content-type")
SIGNATURE_LABEL: Final = "sig1"
ALGORITHM: Final = "ed25519"
_ALLOWED_PARAMS: Final = frozenset({"created", "keyid", "nonce", "alg"})
_NONCE_RE: Final = re.compile(r"[A-Za-z0-9_-]{22,128}={0,2}")
_KEYID_RE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")  # printable ASCII without '"' and '\'
_MAX_HEADER_CHARS: Final = 4096

KeyStatus = Literal["active", "revoked"]


# ---------------------------------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the verifier needs to know of a registered key."""

    key_id: str
    public_key: Ed25519PublicKey
    role: Role
    #: Devices this key may send for: one camera's own key, or a site gateway's key for every device behind it.
    device_ids: frozenset[str] = frozenset()
    status: KeyStatus = "active"
    not_before: datetime | None = None
    not_after: datetime | None = None
    algorithm: Literal["ed25519"] = "ed25519"


class KeyResolver(Protocol):
    """Looks up a key by id (the device and partner registry)."""

    def resolve(self, key_id: str) -> KeyInfo | None:
        """The key registered under ``key_id``, or None."""
        ...


class NonceStore(Protocol):
    """Remembers nonces per key for a while (a DynamoDB conditional put with TTL in the cloud)."""

    def remember(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        """Record the nonce; False when it was already recorded and has not expired."""
        ...


class MemoryNonceStore:
    """A process-local nonce store, for tests and single-process receivers."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seen: dict[tuple[str, str], float] = {}

    def remember(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        now = self._clock()
        if len(self._seen) > 100_000:
            self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
        expires = self._seen.get((key_id, nonce))
        if expires is not None and expires > now:
            return False
        self._seen[(key_id, nonce)] = now + ttl_seconds
        return True


# ---------------------------------------------------------------------------------------------------- base


def content_digest(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` field value of ``body``: ``sha-256=:<base64>:``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def _sf_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _signature_params(params: Mapping[str, str | int]) -> str:
    """The ``@signature-params`` value: the covered components and the parameters in the order given."""
    components = " ".join(_sf_string(c) for c in COVERED_COMPONENTS)
    rendered = "".join(f";{k}={v}" if isinstance(v, int) else f";{k}={_sf_string(v)}" for k, v in params.items())
    return f"({components}){rendered}"


def signature_base(method: str, path: str, content_digest_value: str, content_type: str, signature_params: str) -> str:
    """The RFC 9421 section 2.5 signature base of this profile."""
    return (
        f'"@method": {method.upper()}\n'
        f'"@path": {path or "/"}\n'
        f'"content-digest": {content_digest_value.strip()}\n'
        f'"content-type": {content_type.strip()}\n'
        f'"@signature-params": {signature_params}'
    )


# ---------------------------------------------------------------------------------------------------- signer


class Signer:
    """Signs requests for a device or partner key; the signature is made at send time.

    >>> signer = Signer(key_id, private_key)
    >>> headers = signer.sign("POST", "/v1/events", body)
    >>> requests.post(api_url + "/v1/events", data=body, headers=headers)
    """

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey, *, clock: Callable[[], float] = time.time) -> None:
        self.key_id = key_id
        self._private_key = private_key
        self._clock = clock

    def sign(
        self,
        method: str,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        created: int | None = None,
        nonce: str | None = None,
    ) -> dict[str, str]:
        """The headers to send with this request: Content-Type, Content-Digest, Signature-Input, Signature.

        ``path`` is the path the client calls (no query, no stage prefix); ``created`` defaults to the clock.
        """
        digest = content_digest(body)
        params = _signature_params(
            {
                "created": int(self._clock()) if created is None else created,
                "keyid": self.key_id,
                "nonce": secrets.token_urlsafe(NONCE_MIN_BYTES) if nonce is None else nonce,
            }
        )
        base = signature_base(method, path, digest, content_type, params)
        signature = self._private_key.sign(base.encode("ascii"))
        return {
            "Content-Type": content_type,
            "Content-Digest": digest,
            "Signature-Input": f"{SIGNATURE_LABEL}={params}",
            "Signature": f"{SIGNATURE_LABEL}=:{base64.b64encode(signature).decode('ascii')}:",
        }


# ---------------------------------------------------------------------------------------------------- verifier


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """A request whose signature verified: the key it was signed with and its parameters."""

    key: KeyInfo
    created: int
    nonce: str


class Verifier:
    """Verifies signed requests (docs/api.md, "Authentication").

    Every failure raises ``SignatureError`` with a stable code.

    Order: headers present and well formed → freshness → digest over the raw body → key (known, active,
    in its validity window) → signature → nonce (remembered only once the signature holds, so a forger
    cannot burn nonces).
    """

    def __init__(
        self,
        keys: KeyResolver,
        nonces: NonceStore,
        *,
        clock: Callable[[], float] = time.time,
        max_age_secs: int = SIGNATURE_MAX_AGE_SECS,
        max_skew_secs: int = SIGNATURE_MAX_SKEW_SECS,
        nonce_ttl_secs: int = NONCE_TTL_SECS,
    ) -> None:
        self._keys = keys
        self._nonces = nonces
        self._clock = clock
        self._max_age_secs = max_age_secs
        self._max_skew_secs = max_skew_secs
        self._nonce_ttl_secs = nonce_ttl_secs

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> VerifiedRequest:
        """Verify one request. ``path`` is the path the client called, without an API Gateway stage."""
        fields = {name.lower(): value for name, value in headers.items()}
        sig_input_field = fields.get("signature-input")
        signature_field = fields.get("signature")
        if not sig_input_field or not signature_field:
            raise SignatureError("request has no Signature and Signature-Input", code=ErrorCode.SIGNATURE_MISSING)
        params, signature = _parse_signature(sig_input_field, signature_field)
        created, key_id, nonce = int(params["created"]), str(params["keyid"]), str(params["nonce"])

        now = self._clock()
        if created < now - self._max_age_secs or created > now + self._max_skew_secs:
            raise SignatureError(
                f"signature created outside [-{self._max_age_secs}s, +{self._max_skew_secs}s] of server time",
                code=ErrorCode.SIGNATURE_EXPIRED,
            )

        digest_field = fields.get("content-digest")
        if not digest_field or not _digest_matches(digest_field, body):
            raise SignatureError("Content-Digest does not match the body", code=ErrorCode.DIGEST_MISMATCH)
        content_type = fields.get("content-type")
        if content_type is None:
            raise SignatureError("content-type is covered but missing", code=ErrorCode.SIGNATURE_INVALID)

        key = self._keys.resolve(key_id)
        if key is None:
            raise SignatureError("key is not registered", code=ErrorCode.UNKNOWN_KEY)
        if key.status != "active":
            raise SignatureError("key is revoked", code=ErrorCode.KEY_REVOKED)
        when = datetime.fromtimestamp(now, UTC)
        if (key.not_before is not None and when < key.not_before) or (
            key.not_after is not None and when > key.not_after
        ):
            raise SignatureError("key is outside its validity window", code=ErrorCode.KEY_INACTIVE)
        if key.algorithm != ALGORITHM:
            raise SignatureError("key algorithm is not supported", code=ErrorCode.SIGNATURE_INVALID)

        base = signature_base(method, path, digest_field, content_type, _signature_params(params))
        try:
            key.public_key.verify(signature, base.encode("ascii"))
        except (InvalidSignature, UnicodeEncodeError) as exc:
            raise SignatureError("signature does not verify", code=ErrorCode.SIGNATURE_INVALID) from exc

        if not self._nonces.remember(key_id, nonce, self._nonce_ttl_secs):
            raise SignatureError("nonce was already used with this key", code=ErrorCode.SIGNATURE_REPLAYED)
        return VerifiedRequest(key=key, created=created, nonce=nonce)


def authorize(key: KeyInfo, *, role: Role, device_id: str | None = None) -> None:
    """Raise ``forbidden_role`` unless ``key`` has ``role``; ``forbidden_device`` unless it may send for it."""
    if key.role != role:
        raise SignatureError(f"a {key.role} key may not do this", code=ErrorCode.FORBIDDEN_ROLE)
    if device_id is not None and device_id not in key.device_ids:
        raise SignatureError("key may not send for this device", code=ErrorCode.FORBIDDEN_DEVICE)


def _digest_matches(field: str, body: bytes) -> bool:
    try:
        members = _Parser(field).dictionary()
    except ValueError:
        return False
    claimed = members.get("sha-256")
    if claimed is None or not isinstance(claimed[0], bytes):
        return False
    return hmac.compare_digest(claimed[0], hashlib.sha256(body).digest())


def _invalid(detail: str) -> SignatureError:
    return SignatureError(detail, code=ErrorCode.SIGNATURE_INVALID)


def _parse_signature(sig_input_field: str, signature_field: str) -> tuple[dict[str, str | int], bytes]:
    if len(sig_input_field) > _MAX_HEADER_CHARS or len(signature_field) > _MAX_HEADER_CHARS:
        raise _invalid("signature headers are too long")
    try:
        inputs = _Parser(sig_input_field).dictionary()
        signatures = _Parser(signature_field).dictionary()
    except ValueError as exc:
        raise _invalid(f"malformed signature header: {exc}") from exc
    if SIGNATURE_LABEL not in inputs or SIGNATURE_LABEL not in signatures:
        raise _invalid(f"no signature labelled {SIGNATURE_LABEL}")
    components, params = inputs[SIGNATURE_LABEL]
    signature = signatures[SIGNATURE_LABEL][0]
    if not isinstance(components, list) or tuple(components) != COVERED_COMPONENTS:
        raise _invalid("covered components must be " + " ".join(COVERED_COMPONENTS))
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise _invalid("signature must be a 64-byte Ed25519 signature")
    if set(params) - _ALLOWED_PARAMS:
        raise _invalid("unexpected signature parameter")
    created, key_id, nonce = params.get("created"), params.get("keyid"), params.get("nonce")
    if not isinstance(created, int) or isinstance(created, bool):
        raise _invalid("created must be an integer")
    if not isinstance(key_id, str) or not _KEYID_RE.fullmatch(key_id):
        raise _invalid("keyid is missing or malformed")
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce) or len(_b64url_decode(nonce)) < NONCE_MIN_BYTES:
        raise _invalid("nonce must be at least 128 bits of base64url")
    if params.get("alg", ALGORITHM) != ALGORITHM:
        raise _invalid("alg is pinned by the key registry")
    # every value is now an int (created) or a str (keyid, nonce, alg); keep the received order
    return {k: v for k, v in params.items() if isinstance(v, int | str) and not isinstance(v, bytes)}, signature


def _b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        return b""


# ---------------------------------------------------------------------------------------------------- parser

Bare = int | str | bytes | bool
Params = dict[str, Bare]
_KEY_RE: Final = re.compile(r"[a-z*][a-z0-9_.*-]*")
_TOKEN_RE: Final = re.compile(r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+.^_`|~-]*")
_INT_RE: Final = re.compile(r"-?[0-9]{1,15}")


class _Parser:
    """The subset of RFC 8941 structured fields the profile uses: a Dictionary whose members are Items or
    Inner Lists of Items, with Parameters; bare items are Integers, Strings, Tokens, Byte Sequences and
    Booleans. Anything else (Decimals, Display Strings, Dates) is rejected as malformed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def dictionary(self) -> dict[str, tuple[Bare | list[Bare], Params]]:
        out: dict[str, tuple[Bare | list[Bare], Params]] = {}
        self._skip(" ")
        while self.pos < len(self.text):
            name = self._match(_KEY_RE, "key")
            if self._peek() == "=":
                self.pos += 1
                value: Bare | list[Bare] = self._inner_list() if self._peek() == "(" else self._bare()
            else:
                value = True
            out[name] = (value, self._params())
            self._skip(" \t")
            if self.pos >= len(self.text):
                break
            if self._peek() != ",":
                raise ValueError("expected ','")
            self.pos += 1
            self._skip(" \t")
            if self.pos >= len(self.text):
                raise ValueError("trailing ','")
        return out

    def _inner_list(self) -> list[Bare]:
        self.pos += 1
        items: list[Bare] = []
        while True:
            self._skip(" ")
            if self._peek() == ")":
                self.pos += 1
                return items
            items.append(self._bare())
            if self._params():
                raise ValueError("component parameters are not part of this profile")
            if self._peek() not in (" ", ")"):
                raise ValueError("expected ' ' or ')'")

    def _params(self) -> Params:
        params: Params = {}
        while self._peek() == ";":
            self.pos += 1
            self._skip(" ")
            name = self._match(_KEY_RE, "parameter key")
            if self._peek() == "=":
                self.pos += 1
                params[name] = self._bare()
            else:
                params[name] = True
        return params

    def _bare(self) -> Bare:
        c = self._peek()
        if c == '"':
            return self._string()
        if c == ":":
            end = self.text.find(":", self.pos + 1)
            if end < 0:
                raise ValueError("unterminated byte sequence")
            chunk = self.text[self.pos + 1 : end]
            self.pos = end + 1
            try:
                return base64.b64decode(chunk, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("bad byte sequence") from exc
        if c == "?":
            flag = self.text[self.pos + 1 : self.pos + 2]
            if flag not in ("0", "1"):
                raise ValueError("bad boolean")
            self.pos += 2
            return flag == "1"
        if c == "-" or c.isdigit():
            raw = self._match(_INT_RE, "integer")
            if self._peek() == ".":
                raise ValueError("decimals are not part of this profile")
            return int(raw)
        return self._match(_TOKEN_RE, "token")

    def _string(self) -> str:
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            self.pos += 1
            if c == "\\":
                nxt = self.text[self.pos : self.pos + 1]
                if nxt not in ('"', "\\"):
                    raise ValueError("bad escape")
                out.append(nxt)
                self.pos += 1
            elif c == '"':
                return "".join(out)
            elif not " " <= c <= "~":
                raise ValueError("non-printable character in string")
            else:
                out.append(c)
        raise ValueError("unterminated string")

    def _match(self, pattern: re.Pattern[str], what: str) -> str:
        m = pattern.match(self.text, self.pos)
        if m is None:
            raise ValueError(f"expected {what}")
        self.pos = m.end()
        return m.group(0)

    def _peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def _skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1
