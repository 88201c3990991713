"""Errors of the redact stage."""

from __future__ import annotations

__all__ = ["RedactError"]


class RedactError(Exception):
    """A record that cannot be built (e.g. encryption asked for but no KMS key configured)."""

    code = "redact_failed"
