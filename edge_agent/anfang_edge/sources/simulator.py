"""The simulator source: a fleet of virtual devices producing all six event types with real images.

Its progress (the next sequence number) is committed in the same transaction as the events it spools,
so after a crash it resumes exactly where the last durable put ended: no event is made twice, none is
skipped. Each event carries ``source_ref = "sim-<seq>"``.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from anfang.contracts import (
    DEFAULT_IMAGE_ROLES,
    EVENT_TYPES,
    MAX_IMAGE_BYTES,
    PERSON_PATHS,
    EventImage,
    ImageRole,
    new_event_id,
    validate_event,
)
from anfang.contracts.examples import example_events, example_population

from ..config import SimulatorSourceConfig
from ..errors import ConfigError, SpoolFullError
from ..spool import Spool, SpoolItem, item_from_event

__all__ = ["FixtureImages", "Simulator", "simulated_event"]

log = logging.getLogger("anfang_edge.sources.simulator")

_TICK_SECS: Final = 0.05
_MAX_PUT: Final = 500
_CST: Final = dt.timezone(dt.timedelta(hours=8))
_PLATE_LETTERS: Final = "ABCDEFGHJK"
_ALARM_KINDS: Final = ("perimeter_intrusion", "patrol_missed", "behaviour_anomaly", "loitering", "crowding", "tamper")
_CREDENTIALS: Final = ("card", "face", "qr", "id_card", "password", "visitor_code", "remote")
_PREFERRED: Final[dict[str, str]] = {
    "face": "face_crop.jpg",
    "scene": "astronaut_512.jpg",
    "vehicle": "scene_noface_1280x720.jpg",
}


class FixtureImages:
    """The fixture JPEGs, loaded once and turned into wire images per role."""

    def __init__(self, directory: Path) -> None:
        files = sorted(p for p in directory.glob("*.jp*g") if p.is_file() and p.stat().st_size <= MAX_IMAGE_BYTES)
        if not files:
            raise ConfigError(f"no fixture images (*.jpg of at most 1 MiB) in {directory}")
        self._raw = {p.name: p.read_bytes() for p in files}
        self._cache: dict[ImageRole, EventImage] = {}

    def image(self, role: ImageRole) -> EventImage:
        if role not in self._cache:
            name = _PREFERRED.get(role, "face_crop.jpg" if role == "person" else "scene_noface_1280x720.jpg")
            raw = self._raw.get(name) or min(self._raw.values(), key=len)
            self._cache[role] = EventImage.from_bytes(role, raw)
        return self._cache[role]


_PEOPLE: Final = example_population()


def _vary_plate(event: dict[str, Any], rng: random.Random) -> None:
    letters = "".join(rng.choice(_PLATE_LETTERS) for _ in range(2))
    event["vehicle"].update(
        plate=f"浙A{letters}{rng.randrange(1000):03d}",
        plate_color=rng.choice(("blue", "yellow", "green")),
        vehicle_color=rng.choice(("white", "black", "silver")),
    )


def _vary_access(event: dict[str, Any], rng: random.Random) -> None:
    event["access"] = {
        "credential": rng.choice(_CREDENTIALS),
        "result": rng.choice(("granted", "granted", "granted", "denied")),
        "door": rng.choice(("north gate", "south gate", "unit 3 door")),
    }


def _vary_visitor(event: dict[str, Any], rng: random.Random) -> None:
    event["visitor"]["host_unit"] = f"{rng.randrange(1, 9)}-{rng.randrange(1, 6)}-{rng.randrange(101, 1801)}"
    event["visitor"]["purpose"] = rng.choice(("family visit", "delivery", "maintenance"))


def _vary_alarm(event: dict[str, Any], rng: random.Random) -> None:
    event["alarm"] = {
        "kind": rng.choice(_ALARM_KINDS),
        "severity": rng.choice(("info", "warning", "critical")),
        "zone": rng.choice(("east fence", "car park", "lobby")),
    }


def _vary_status(event: dict[str, Any], rng: random.Random) -> None:
    event["status"] = {"state": rng.choice(("online", "patrol_checkin")), "detail": "simulated"}


#: Optional variety per event type; a type without an entry is sent as its example (so a new type needs none).
_VARIATIONS: Final[dict[str, Callable[[dict[str, Any], random.Random], None]]] = {
    "plate_capture": _vary_plate,
    "access": _vary_access,
    "visitor": _vary_visitor,
    "alarm": _vary_alarm,
    "device_status": _vary_status,
}
#: Where the fixture scene (astronaut_512.jpg) has its face, for a face capture's device-reported box.
_FIXTURE_FACE_BOX: Final = {"x": 180, "y": 60, "w": 150, "h": 180}


def simulated_event(
    seq: int, *, device_id: str, captured_at: dt.datetime, images: FixtureImages | None, rng: random.Random
) -> dict[str, Any]:
    """The JSON of simulated event number ``seq``: the example of its type (the type cycles through all of
    them) with fresh ids and time, fixture images for the example's image roles, a simulated resident at each
    person path, and the type's variety if it has one. Without fixtures the examples' own tiny images go."""
    event_type = EVENT_TYPES[seq % len(EVENT_TYPES)]
    event = example_events()[event_type]  # fresh dicts: a few tiny base64 images, microseconds
    event.update(
        event_id=new_event_id(int(captured_at.timestamp() * 1000)),
        device_id=device_id,
        captured_at=captured_at.isoformat(timespec="milliseconds"),
        direction=rng.choice(("in", "out", "unknown")),
        source_ref=f"sim-{seq}",
    )
    roles = [image["role"] for image in event.get("images", [])] or [r for r in [DEFAULT_IMAGE_ROLES[event_type]] if r]
    if images is not None and roles:
        event["images"] = [images.image(role).model_dump() for role in roles]
        if event_type == "face_capture":
            event["face"] = {"box": dict(_FIXTURE_FACE_BOX)}
    for *parents, leaf in PERSON_PATHS[event_type]:
        node = event
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = dict(rng.choice(_PEOPLE))
    vary = _VARIATIONS.get(event_type)
    if vary is not None:
        vary(event, rng)
    return event


class Simulator:
    """Produces ``rate_per_sec`` events across ``devices`` virtual devices, up to ``max_events``."""

    def __init__(self, config: SimulatorSourceConfig, spool: Spool, *, name: str = "simulator") -> None:
        self.config = config
        self.spool = spool
        self.name = name
        self._cursor_key = f"{name}.next_seq"
        self._rng = random.Random(config.seed)
        self._images: FixtureImages | None = None
        if config.images:
            if config.fixtures_dir is None:
                raise ConfigError("simulator.images needs fixtures_dir (no fixtures found next to the repository)")
            self._images = FixtureImages(config.fixtures_dir)
        self._devices = [f"{config.device_id_prefix}{serial:06d}" for serial in range(1, config.devices + 1)]

    def next_seq(self) -> int:
        value = self.spool.get_meta(self._cursor_key)
        return int(value) if value else 0

    def make_items(self, start: int, count: int) -> list[SpoolItem]:
        """Events ``start`` … ``start + count - 1``, validated through the contract models."""
        items = []
        for seq in range(start, start + count):
            now = dt.datetime.now(_CST)
            obj = simulated_event(
                seq,
                device_id=self._devices[seq % len(self._devices)],
                captured_at=now,
                images=self._images,
                rng=self._rng,
            )
            broken = self.config.broken_every
            if broken is not None and seq % broken == broken - 1 and obj.get("images"):
                # the camera's own digest is of what it sends: the JPEG itself is what is broken
                image = obj["images"][0]
                whole = base64.b64decode(image["data"])
                obj["images"][0] = EventImage.from_bytes(image["role"], whole[: len(whole) // 2]).model_dump()
            items.append(item_from_event(validate_event(obj)))
        return items

    def run(self, stop: threading.Event) -> None:
        seq = self.next_seq()
        limit = self.config.max_events
        # the profile's clock: wall time since ``started_at`` (so a restart catches up, counted from seq 0), or
        # the monotonic time since this run began (counted from where it resumed)
        anchored = self.config.started_at
        started, made = (anchored, seq) if anchored is not None else (time.monotonic(), 0)
        clock = time.time if anchored is not None else time.monotonic
        log.info("simulator %s starting at seq %d", self.name, seq)
        while not stop.is_set() and (limit is None or seq < limit):
            due = int(self.config.due(clock() - started)) - made
            count = min(due, _MAX_PUT, (limit - seq) if limit is not None else _MAX_PUT)
            if count <= 0:
                stop.wait(_TICK_SECS)
                continue
            items = self.make_items(seq, count)
            try:
                self.spool.put_many(items, timeout=1.0, meta={self._cursor_key: str(seq + count)})
            except SpoolFullError:
                continue  # when_full = "block": wait for the uploader to make room, still answering stop
            seq += count
            made += count
        log.info("simulator %s stopped at seq %d", self.name, seq)
