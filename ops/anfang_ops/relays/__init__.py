"""Relays: carry destination records from their SQS queues into networks that are not AWS.

- ``gat1400``: police_video records → the police view library (视图库), as a GA/T 1400 cascade (Digest register,
  keepalive, ``/VIID/Faces`` and ``/VIID/MotorVehicles`` with base64 images, per-object answers).
- ``https``: gov_cloud records → the county data platform, in batches signed with the devices' RFC 9421 profile.

Both read the queue into a durable SQLite outbox (fsync before the message is deleted), deduplicate by
(device_id, event_id), and acknowledge a record only when the upstream did. See ``docs/relays.md``.

>>> relay = build_gat1400_relay(load_gat1400_config(Path("gat1400.toml")))
>>> relay.run(stop_event)
"""

from __future__ import annotations

from .base import Backoff, Delivery, Relay
from .config import Gat1400RelayConfig, HttpsRelayConfig, load_gat1400_config, load_https_config
from .errors import (
    ImageFetchError,
    OutboxError,
    RecordMappingError,
    RelayConfigError,
    RelayError,
    UpstreamAuthError,
    UpstreamError,
)
from .gat1400 import Gat1400Relay, PreferredDigestAuth, ViewLibraryClient
from .https import HttpsRelay, batch_body
from .images import ImageStore, S3Images
from .outbox import Outbox, OutboxEntry, PendingRecord
from .reader import QueueReader, entry_of
from .viid import LISTS, object_ids, to_viid_object
from .wiring import build_gat1400_relay, build_https_relay

__all__ = [
    "LISTS",
    "Backoff",
    "Delivery",
    "Gat1400Relay",
    "Gat1400RelayConfig",
    "HttpsRelay",
    "HttpsRelayConfig",
    "ImageFetchError",
    "ImageStore",
    "Outbox",
    "OutboxEntry",
    "OutboxError",
    "PendingRecord",
    "PreferredDigestAuth",
    "QueueReader",
    "RecordMappingError",
    "Relay",
    "RelayConfigError",
    "RelayError",
    "S3Images",
    "UpstreamAuthError",
    "UpstreamError",
    "ViewLibraryClient",
    "batch_body",
    "build_gat1400_relay",
    "build_https_relay",
    "entry_of",
    "load_gat1400_config",
    "load_https_config",
    "object_ids",
    "to_viid_object",
]
