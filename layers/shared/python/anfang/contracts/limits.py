"""Limits of the v1 wire contracts, in one place so that the API, the edge agent and the schemas agree."""

from typing import Final

#: Largest request body accepted by ``POST /v1/events`` (5 MiB).
MAX_BODY_BYTES: Final = 5 * 1024 * 1024
#: Events per batch.
MAX_EVENTS_PER_BATCH: Final = 500
#: Images per event (one per role at most, and there are five roles).
MAX_IMAGES_PER_EVENT: Final = 5
#: Decoded size of one image (1 MiB).
MAX_IMAGE_BYTES: Final = 1024 * 1024
#: Base64 characters of one image at ``MAX_IMAGE_BYTES`` (padded).
MAX_IMAGE_BASE64_CHARS: Final = 4 * ((MAX_IMAGE_BYTES + 2) // 3)
#: Pixels (width x height) of one image; a 1 MiB JPEG can claim far more, a decompression bomb does.
MAX_IMAGE_PIXELS: Final = 4096 * 4096
#: Longest side of one image in pixels.
MAX_IMAGE_SIDE_PIXELS: Final = 8192
#: Depth of JSON nesting accepted before parsing (a v1 batch needs 6).
MAX_JSON_DEPTH: Final = 16
#: Health-code delta records per request.
MAX_HEALTH_CODE_DELTAS: Final = 10_000
#: Largest health-code snapshot file a commission may declare (1 GiB): the import function's default cap.
MAX_SNAPSHOT_BYTES: Final = 1024 * 1024 * 1024
#: Length of free-text fields (door, zone, purpose, detail, ...).
MAX_TEXT_CHARS: Final = 256
#: Length of short labels (names, units, references).
MAX_LABEL_CHARS: Final = 64

#: Signature freshness: ``created`` no older than this.
SIGNATURE_MAX_AGE_SECS: Final = 300
#: Signature freshness: ``created`` no further in the future than this.
SIGNATURE_MAX_SKEW_SECS: Final = 60
#: How long a nonce is remembered per key.
NONCE_TTL_SECS: Final = 600
#: Smallest nonce, in random bytes (128 bits).
NONCE_MIN_BYTES: Final = 16
