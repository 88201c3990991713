"""HTTP Digest access authentication for ``/VIID/System/Register`` (RFC 7616, RFC 2617): MD5 and SHA-256.

Server nonces are random, remembered with their issue time and expire after ``nonce_ttl_secs``; a correct
response on an expired nonce gets a fresh challenge with ``stale=true`` (the device retries without asking
for the password again). ``qop=auth`` only; the nonce count must grow per nonce (no replays).

Why it is written here: the standard library has a Digest *client* (``urllib.request``) but no server side,
and the server-side implementations on PyPI come with a web framework (Flask-HTTPAuth, Werkzeug); the edge
agent installs the contracts and the standard library only. The verifier is checked against RFC 7616's
MD5 and SHA-256 example responses in the tests.

>>> digest = DigestAuth(realm="anfang-edge", algorithms=("SHA-256", "MD5"))
>>> headers = digest.challenges()
>>> digest.verify("POST", header, password_of)   # → username
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["Algorithm", "DigestAuth", "DigestError", "digest_response", "parse_authorization"]

Algorithm = Literal["MD5", "SHA-256"]
_HASHES: Final = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_PARAM_RE: Final = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)\s*(?:,|$)')
_MAX_NONCES: Final = 10_000


class DigestError(Exception):
    """Authentication failed; ``stale`` when only the nonce had expired."""

    def __init__(self, detail: str, *, stale: bool = False, username: str | None = None) -> None:
        super().__init__(detail)
        self.stale = stale
        self.username = username


def parse_authorization(header: str) -> dict[str, str]:
    """The parameters of a ``Digest`` Authorization header (names lower-cased, quotes removed)."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError("Authorization is not Digest")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM_RE.match(rest, pos)
        if match is None or match.end() == pos:
            raise DigestError("Authorization header is malformed")
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name] = value
        pos = match.end()
    return params


def digest_response(
    algorithm: Algorithm,
    *,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """The RFC 7616 ``response`` for qop=auth: H(H(A1):nonce:nc:cnonce:qop:H(A2))."""
    h = _HASHES[algorithm]

    def hexh(text: str) -> str:
        return h(text.encode("utf-8")).hexdigest()

    ha1 = hexh(f"{username}:{realm}:{password}")
    ha2 = hexh(f"{method}:{uri}")
    return hexh(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass(slots=True)
class _Nonce:
    issued: float
    last_nc: int = 0


class DigestAuth:
    """Challenges and verifies Digest credentials; thread-safe."""

    def __init__(
        self,
        *,
        realm: str,
        algorithms: tuple[Algorithm, ...] = ("SHA-256", "MD5"),
        nonce_ttl_secs: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.realm = realm
        self.algorithms = algorithms
        self.nonce_ttl_secs = nonce_ttl_secs
        self._clock = clock
        self._opaque = secrets.token_hex(16)
        self._nonces: dict[str, _Nonce] = {}
        self._lock = threading.Lock()

    def challenges(self, *, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values, one per allowed algorithm (preferred first), sharing a fresh nonce."""
        nonce = secrets.token_urlsafe(24)
        now = self._clock()
        with self._lock:
            if len(self._nonces) >= _MAX_NONCES:
                self._nonces = {n: v for n, v in self._nonces.items() if now - v.issued <= self.nonce_ttl_secs}
            if len(self._nonces) >= _MAX_NONCES:  # still full: forget the oldest
                self._nonces.pop(next(iter(self._nonces)))
            self._nonces[nonce] = _Nonce(issued=now)
        extra = ", stale=true" if stale else ""
        return [
            f'Digest realm="{self.realm}", qop="auth", algorithm={algorithm}, nonce="{nonce}",'
            f' opaque="{self._opaque}"{extra}'
            for algorithm in self.algorithms
        ]

    def verify(self, method: str, path: str, header: str, password_of: Callable[[str], str | None]) -> str:
        """The authenticated username, or ``DigestError`` (``stale=True`` when only the nonce expired)."""
        params = parse_authorization(header)
        for name in ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce"):
            if not params.get(name):
                raise DigestError(f"Authorization lacks {name} (qop=auth is required)")
        username = params["username"]
        algorithm = params.get("algorithm", "MD5").upper()
        chosen: Algorithm | None = next((a for a in self.algorithms if a == algorithm), None)
        if chosen is None:
            raise DigestError(f"algorithm {algorithm} is not allowed", username=username)
        if params["qop"] != "auth":
            raise DigestError("only qop=auth is supported", username=username)
        if params["realm"] != self.realm:
            raise DigestError("wrong realm", username=username)
        if params["uri"].split("?", 1)[0] != path:
            raise DigestError("uri does not match the request", username=username)
        if params.get("opaque", self._opaque) != self._opaque:
            raise DigestError("wrong opaque", username=username)
        try:
            nc = int(params["nc"], 16)
        except ValueError:
            raise DigestError("nc is not hexadecimal", username=username) from None
        password = password_of(username)
        expected = digest_response(
            chosen,
            username=username,
            realm=self.realm,
            password=password if password is not None else secrets.token_hex(16),
            method=method,
            uri=params["uri"],
            nonce=params["nonce"],
            nc=params["nc"],
            cnonce=params["cnonce"],
        )
        if password is None or not hmac.compare_digest(expected, params["response"].lower()):
            raise DigestError("wrong username or password", username=username)
        with self._lock:
            state = self._nonces.get(params["nonce"])
            if state is None or self._clock() - state.issued > self.nonce_ttl_secs:
                self._nonces.pop(params["nonce"], None)
                raise DigestError("nonce expired", stale=True, username=username)
            if nc <= state.last_nc:
                raise DigestError("nonce count reused", username=username)
            state.last_nc = nc
        return username
