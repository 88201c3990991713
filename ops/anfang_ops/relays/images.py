"""Fetch a record's images by their claim-check references (``s3://bucket/key``) and check their digests.

The police account reads the raw-image and image buckets with its own credentials (the grants are the
stack's business, issue 17). Every image is checked against the record's ``sha256`` before it is forwarded:
a swapped or truncated object is an error, never a silently different picture.

AWS calls: one GetObject per image.

>>> images = S3Images(boto3.client("s3"))
>>> data = images.fetch("s3://anfang-330106-raw-…/raw/…/face.jpg", sha256="…")
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Protocol
from urllib.parse import urlsplit

from anfang.contracts import MAX_IMAGE_BYTES

from .errors import ImageFetchError

__all__ = ["ImageStore", "S3Images", "split_s3_ref"]

#: Derived images are smaller than originals; anything past this is not one of ours.
_MAX_FETCH_BYTES = MAX_IMAGE_BYTES


class ImageStore(Protocol):
    def fetch(self, ref: str, *, sha256: str) -> bytes: ...


def split_s3_ref(ref: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` reference."""
    parts = urlsplit(ref)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.lstrip("/"):
        raise ImageFetchError(f"image reference {ref!r} is not s3://bucket/key")
    return parts.netloc, parts.path.lstrip("/")


def check_digest(data: bytes, sha256: str, ref: str) -> bytes:
    """``data`` when its SHA-256 is ``sha256`` (hex), else ImageFetchError."""
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), sha256.lower()):
        raise ImageFetchError(f"image {ref} does not match the record's sha256")
    return data


class S3Images:
    """Images from S3 through an injected client (the relay's own credentials)."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def fetch(self, ref: str, *, sha256: str) -> bytes:
        bucket, key = split_s3_ref(ref)
        try:
            answer = self._s3.get_object(Bucket=bucket, Key=key)
            if int(answer.get("ContentLength", 0)) > _MAX_FETCH_BYTES:
                raise ImageFetchError(f"image {ref} is larger than {_MAX_FETCH_BYTES} bytes")
            data = answer["Body"].read(_MAX_FETCH_BYTES + 1)
        except ImageFetchError:
            raise
        except Exception as exc:  # botocore ClientError, connection errors: one typed error, retried per record
            raise ImageFetchError(f"cannot fetch {ref}: {exc}") from exc
        if len(data) > _MAX_FETCH_BYTES:
            raise ImageFetchError(f"image {ref} is larger than {_MAX_FETCH_BYTES} bytes")
        return check_digest(data, sha256, ref)
