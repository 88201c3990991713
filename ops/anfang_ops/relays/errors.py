"""The relays' typed errors; each carries a stable machine ``code``."""

from __future__ import annotations

__all__ = [
    "ImageFetchError",
    "OutboxError",
    "RecordMappingError",
    "RelayConfigError",
    "RelayError",
    "UpstreamAuthError",
    "UpstreamError",
]


class RelayError(Exception):
    """Base of every relay error."""

    code = "relay_error"


class RelayConfigError(RelayError):
    """The TOML configuration is missing, malformed or names unreadable files."""

    code = "config_invalid"


class OutboxError(RelayError):
    """The outbox file cannot be opened or written."""

    code = "outbox_unavailable"


class RecordMappingError(RelayError):
    """A record cannot be expressed for the upstream (e.g. a plate capture without a plate)."""

    code = "record_unmappable"


class ImageFetchError(RelayError):
    """An image of a record could not be fetched, or its bytes do not match the record's sha256."""

    code = "image_unavailable"


class UpstreamError(RelayError):
    """The upstream could not be reached or answered with a failure for the whole request (retried)."""

    code = "upstream_unavailable"

    def __init__(self, detail: str, *, retry_after_secs: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_secs = retry_after_secs


class UpstreamAuthError(UpstreamError):
    """The upstream refused our credentials or forgot our registration (GA/T 1400: register again)."""

    code = "upstream_unauthorized"
