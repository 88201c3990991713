"""Errors of the redact stage."""

from __future__ import annotations

__all__ = ["DataKeyError", "RedactError"]


class RedactError(Exception):
    """A record that cannot be built (e.g. encryption asked for but no KMS key configured)."""

    code = "redact_failed"


class DataKeyError(RedactError):
    """KMS gave no data key for a destination (key disabled or pending deletion, access denied, throttled
    beyond botocore's retries): that destination's records that encrypt a field cannot be built now."""

    code = "data_key_unavailable"
