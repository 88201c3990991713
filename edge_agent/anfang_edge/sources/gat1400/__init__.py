"""GA/T 1400 (视图库, VIID) receiver: cameras and NVRs push faces and vehicles without vendor SDKs.

>>> source = Gat1400Source(config.sources[0], spool)
>>> threading.Thread(target=source.run, args=(stop,)).start()
"""

from __future__ import annotations

from .digest import DigestAuth, DigestError, digest_response
from .mapping import Deviation, StatusCode, deterministic_event_id, map_face, map_motor_vehicle, map_person
from .server import CONTENT_TYPE, Gat1400Source

__all__ = [
    "CONTENT_TYPE",
    "Deviation",
    "DigestAuth",
    "DigestError",
    "Gat1400Source",
    "StatusCode",
    "deterministic_event_id",
    "digest_response",
    "map_face",
    "map_motor_vehicle",
    "map_person",
]
