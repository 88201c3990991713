"""The field-encryption envelope's associated data: what binds an envelope to its destination, event and field.

Shared by the redactor that seals and every reader that opens (``anfang decrypt``, the consumers), so both
sides build the same bytes. The envelope itself is :class:`anfang.contracts.records.Envelope`.

>>> encryption_aad("police_video", "0190f3c4-8a4e-7cc2-9b1f-3a2b4c5d6e7f", "person.name")
b'{"destination":"police_video","event_id":"0190f3c4-8a4e-7cc2-9b1f-3a2b4c5d6e7f","field":"person.name"}'
"""

from __future__ import annotations

import json

__all__ = ["encryption_aad"]


def encryption_aad(destination: str, event_id: str, field: str) -> bytes:
    """The AES-GCM associated data binding an envelope to its destination, event and field."""
    return json.dumps(
        {"destination": destination, "event_id": event_id, "field": field}, sort_keys=True, separators=(",", ":")
    ).encode()
