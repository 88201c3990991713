"""The front door every signed route passes: body limit, signature, replay, key role (docs/api.md, "Authentication").

``authenticate`` is the verb; the routes call it first and get the verified key back. AWS failures of the
registry or the nonce store become ``retry_later`` (503): the client retries, nothing is half-done.

>>> verified = authenticate(verifier, "POST", "/v1/events", headers, body, role="device")
>>> verified.key.device_id
'33010600001320000001'
"""

from __future__ import annotations

from collections.abc import Mapping

from botocore.exceptions import BotoCoreError, ClientError

from anfang.api.http import RequestError
from anfang.contracts.limits import MAX_BODY_BYTES
from anfang.contracts.problems import ErrorCode
from anfang.contracts.signing import VerifiedRequest, Verifier, authorize
from anfang.contracts.types import Role

__all__ = ["authenticate"]


def authenticate(
    verifier: Verifier,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    role: Role,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> VerifiedRequest:
    """Verify a signed request and its key's role; raises ``SignatureError`` or ``RequestError``.

    The size limit comes first (nothing larger is even hashed), then the signature, then the role.
    """
    if len(body) > max_body_bytes:
        raise RequestError(f"body is larger than {max_body_bytes} bytes", code=ErrorCode.PAYLOAD_TOO_LARGE)
    try:
        verified = verifier.verify(method, path, headers, body)
    except (ClientError, BotoCoreError) as exc:
        raise RequestError(
            f"key registry or nonce store unavailable ({type(exc).__name__})", code=ErrorCode.RETRY_LATER
        ) from exc
    authorize(verified.key, role=role)
    return verified
