"""Errors on the wire: the stable ``code`` set and the RFC 9457 problem document.

Codes are part of the contract: clients branch on them, so a code is never renamed or reused.
The HTTP status of each code is fixed here, in one place.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_PREFIX: Final = "urn:anfang:problem:"


class ErrorCode(StrEnum):
    """Stable machine codes of every error the system reports."""

    # authentication (401)
    SIGNATURE_MISSING = "signature_missing"
    SIGNATURE_INVALID = "signature_invalid"
    SIGNATURE_EXPIRED = "signature_expired"
    SIGNATURE_REPLAYED = "signature_replayed"
    DIGEST_MISMATCH = "digest_mismatch"
    UNKNOWN_KEY = "unknown_key"
    KEY_REVOKED = "key_revoked"
    KEY_INACTIVE = "key_inactive"
    # authorisation (403)
    FORBIDDEN_DEVICE = "forbidden_device"
    FORBIDDEN_ROLE = "forbidden_role"
    # request payload (400 / 413 / 422)
    MALFORMED_JSON = "malformed_json"
    PAYLOAD_INVALID = "payload_invalid"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    # per image (a rejected event's reason)
    IMAGE_INVALID = "image_invalid"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_DIGEST_MISMATCH = "image_digest_mismatch"
    IMAGE_TYPE_MISMATCH = "image_type_mismatch"
    IMAGE_UNSUPPORTED = "image_unsupported"
    # routing and back pressure
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    RATE_LIMITED = "rate_limited"
    RETRY_LATER = "retry_later"
    INTERNAL_ERROR = "internal_error"

    @property
    def http_status(self) -> int:
        """The HTTP status a whole request gets when it fails with this code."""
        return _HTTP_STATUS[self]

    @property
    def summary(self) -> str:
        """A short human title, stable per code (the problem's ``title``)."""
        return _TITLES[self]


_HTTP_STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.SIGNATURE_MISSING: 401,
    ErrorCode.SIGNATURE_INVALID: 401,
    ErrorCode.SIGNATURE_EXPIRED: 401,
    ErrorCode.SIGNATURE_REPLAYED: 401,
    ErrorCode.DIGEST_MISMATCH: 401,
    ErrorCode.UNKNOWN_KEY: 401,
    ErrorCode.KEY_REVOKED: 401,
    ErrorCode.KEY_INACTIVE: 401,
    ErrorCode.FORBIDDEN_DEVICE: 403,
    ErrorCode.FORBIDDEN_ROLE: 403,
    ErrorCode.MALFORMED_JSON: 400,
    ErrorCode.PAYLOAD_INVALID: 422,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.IMAGE_INVALID: 422,
    ErrorCode.IMAGE_TOO_LARGE: 413,
    ErrorCode.IMAGE_DIGEST_MISMATCH: 422,
    ErrorCode.IMAGE_TYPE_MISMATCH: 422,
    ErrorCode.IMAGE_UNSUPPORTED: 422,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.RETRY_LATER: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}

_TITLES: Final[dict[ErrorCode, str]] = {
    ErrorCode.SIGNATURE_MISSING: "Request is not signed",
    ErrorCode.SIGNATURE_INVALID: "Signature does not verify",
    ErrorCode.SIGNATURE_EXPIRED: "Signature is outside its freshness window",
    ErrorCode.SIGNATURE_REPLAYED: "Signature nonce was already used",
    ErrorCode.DIGEST_MISMATCH: "Content-Digest does not match the body",
    ErrorCode.UNKNOWN_KEY: "Key is not registered",
    ErrorCode.KEY_REVOKED: "Key is revoked",
    ErrorCode.KEY_INACTIVE: "Key is outside its validity window",
    ErrorCode.FORBIDDEN_DEVICE: "Key may not send for this device",
    ErrorCode.FORBIDDEN_ROLE: "Key role may not use this operation",
    ErrorCode.MALFORMED_JSON: "Body is not valid JSON",
    ErrorCode.PAYLOAD_INVALID: "Payload does not match the contract",
    ErrorCode.PAYLOAD_TOO_LARGE: "Payload exceeds a limit",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "Content type is not supported",
    ErrorCode.IMAGE_INVALID: "Image cannot be read",
    ErrorCode.IMAGE_TOO_LARGE: "Image exceeds a size limit",
    ErrorCode.IMAGE_DIGEST_MISMATCH: "Image sha256 does not match its data",
    ErrorCode.IMAGE_TYPE_MISMATCH: "Image bytes do not match its declared content type",
    ErrorCode.IMAGE_UNSUPPORTED: "Image format is not JPEG or PNG",
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.METHOD_NOT_ALLOWED: "Method not allowed",
    ErrorCode.RATE_LIMITED: "Too many requests",
    ErrorCode.RETRY_LATER: "Temporarily unable to accept; retry later",
    ErrorCode.INTERNAL_ERROR: "Internal error",
}


class Problem(BaseModel):
    """An RFC 9457 problem document with the stable ``code`` extension member."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="URI of the problem type: urn:anfang:problem:<code>")
    title: str
    status: int = Field(ge=400, le=599)
    code: ErrorCode
    detail: str | None = None
    instance: str | None = None
    #: Per-item results when a batch request failed as a whole (e.g. ``retry_later``).
    results: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, code: ErrorCode, detail: str | None = None, **extra: Any) -> Problem:
        """The problem document of ``code``, with its fixed title and status."""
        return cls(
            type=PROBLEM_TYPE_PREFIX + code.value,
            title=code.summary,
            status=code.http_status,
            code=code,
            detail=detail,
            **extra,
        )


class ContractError(Exception):
    """Base of every typed error of the contracts: it carries a stable ``code`` and a safe ``detail``.

    ``detail`` never contains payload values (it may reach logs and clients).
    """

    code: ErrorCode = ErrorCode.PAYLOAD_INVALID

    def __init__(self, detail: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        return self.code.http_status

    def to_problem(self, instance: str | None = None) -> Problem:
        """The problem document for this error."""
        return Problem.of(self.code, self.detail, instance=instance)


class SignatureError(ContractError):
    """A request failed authentication or authorisation (``signature_*``, ``*_key``, ``forbidden_*``)."""

    code = ErrorCode.SIGNATURE_INVALID


class ImageError(ContractError):
    """An image of an event cannot be accepted (``image_*``)."""

    code = ErrorCode.IMAGE_INVALID
