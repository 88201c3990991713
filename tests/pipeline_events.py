"""Builders and hypothesis strategies of pipeline test events: queued events with planted identifiers."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from anfang.contracts import (
    EVENT_TYPES,
    ImageAnalysis,
    QueuedEvent,
    StoredImage,
    new_event_id,
    resident_id_check_char,
    validate_event,
)
from anfang.contracts.examples import example_events
from anfang.contracts.identifiers import PROVINCES
from anfang.pipeline.thumbnails import derived_key

TOWN = "330106"
DEVICE_ID = "33010600001320000001"
RECEIVED_AT = dt.datetime(2026, 11, 29, 0, 30, tzinfo=dt.UTC)

# ---------------------------------------------------------------------------------------------------- strategies

_DIVISIONS = ("110105", "330106", "440305", "510104", "320102", "420111")
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"
_AUTH = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_SER = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"


@st.composite
def resident_ids(draw: st.DrawFn) -> str:
    division = draw(st.sampled_from(_DIVISIONS))
    born = draw(st.dates(min_value=dt.date(1930, 1, 1), max_value=dt.date(2010, 12, 31)))
    seq = draw(st.integers(min_value=0, max_value=999))
    first17 = f"{division}{born:%Y%m%d}{seq:03d}"
    return first17 + resident_id_check_char(first17)


mobiles = st.builds(
    lambda second, rest: f"1{second}{rest:09d}",
    st.sampled_from("3456789"),
    st.integers(min_value=0, max_value=999_999_999),
)
names = st.builds(
    lambda surname, given: surname + given,
    st.sampled_from(_SURNAMES),
    st.text(alphabet=_GIVEN, min_size=1, max_size=2),
)
_ordinary = st.builds(
    lambda p, a, s: p + a + s,
    st.sampled_from(PROVINCES),
    st.sampled_from(_AUTH),
    st.text(alphabet=_SER, min_size=5, max_size=5),
)
_new_energy = st.builds(
    lambda p, a, c, s, d: p + a + c + s + d,
    st.sampled_from(PROVINCES),
    st.sampled_from(_AUTH),
    st.sampled_from("DF"),
    st.sampled_from(_SER),
    st.text(alphabet="0123456789", min_size=4, max_size=4),
)
plates = st.one_of(_ordinary, _new_energy)


@dataclass(frozen=True)
class Planted:
    """The identifiers planted in an event: the person's own fields and the ones in every free-text field."""

    name: str
    id_number: str
    phone: str
    plate: str
    other_name: str
    other_id: str
    other_phone: str
    other_plate: str
    canary: str

    @property
    def free_text(self) -> str:
        return f"{self.other_name} {self.other_id} {self.other_phone} {self.other_plate}"

    @property
    def all_values(self) -> tuple[str, ...]:
        return (
            self.name,
            self.id_number,
            self.phone,
            self.plate,
            self.other_name,
            self.other_id,
            self.other_phone,
            self.other_plate,
        )


def sample_planted(*, id_number: str = "330106198001010013", canary: str = "canary") -> Planted:
    """One fixed person and free text, for tests that need a planted event but not a hypothesis draw."""
    return Planted(
        name="王伟",
        id_number=id_number,
        phone="13912345678",
        plate="浙A12345",
        other_name="李娜",
        other_id="11010519491231002X",
        other_phone="13800001111",
        other_plate="京B54321",
        canary=canary,
    )


planted = st.builds(
    Planted,
    name=names,
    id_number=resident_ids(),
    phone=mobiles,
    plate=plates,
    other_name=names,
    other_id=resident_ids(),
    other_phone=mobiles,
    other_plate=plates,
    canary=st.uuids().map(lambda u: f"canary-{u.hex[:16]}"),
).filter(
    lambda p: (
        len({p.name, p.other_name}) == 2
        and len({p.id_number, p.other_id}) == 2
        and len({p.phone, p.other_phone}) == 2
        and len({p.plate, p.other_plate}) == 2
        and p.name not in p.other_name
        and p.other_name not in p.name
    )
)

# ---------------------------------------------------------------------------------------------------- builders


def stored_images(event_id: str, roles: tuple[str, ...]) -> list[StoredImage]:
    """Stored images of every role, analysed, with both derived thumbnails."""
    images = []
    for role in roles:
        sha = hashlib.sha256(f"{event_id}/{role}".encode()).hexdigest()
        thumb = hashlib.sha256(f"{sha}/t".encode()).hexdigest()
        blurred = hashlib.sha256(f"{sha}/b".encode()).hexdigest()
        images.append(
            StoredImage(
                role=role,  # type: ignore[arg-type]
                content_type="image/jpeg",
                sha256=sha,
                size_bytes=12345,
                width=1920,
                height=1080,
                ref=f"raw/{event_id}/{role}.jpg",
                analysis=ImageAnalysis(
                    quality="ok",
                    sharpness=500.0,
                    brightness=100.0,
                    contrast=50.0,
                    width=1920,
                    height=1080,
                    phash=sha[:16],  # the hash of the unblurred picture: must never reach the gov cloud
                ),
                derived={
                    "thumbnail": derived_key("thumbnail", thumb),
                    "thumbnail_faces_blurred": derived_key("thumbnail_faces_blurred", blurred),
                },
            )
        )
    return images


ALL_ROLES = ("face", "scene", "plate", "vehicle", "person")


def planted_event(event_type: str, p: Planted, *, event_id: str | None = None) -> dict[str, Any]:
    """A valid event JSON of ``event_type`` with ``p`` planted in every string field."""
    event = example_events()[event_type]
    event["event_id"] = event_id or new_event_id()
    event["source_ref"] = p.canary
    text = p.free_text
    person = {"name": p.name, "id_number": p.id_number, "phone": p.phone, "resident_ref": text}
    if event_type == "plate_capture":
        event["vehicle"].update(plate=p.plate, vehicle_type=text, vehicle_color=text)
    elif event_type == "access":
        event["access"]["door"] = text
        event["person"] = person
    elif event_type == "visitor":
        event["visitor"] = {"host_unit": text, "purpose": text, "visitor": person}
    elif event_type == "alarm":
        event["alarm"]["zone"] = text
    elif event_type == "device_status":
        event["status"]["detail"] = text
    return event


def queued(event: dict[str, Any], *, roles: tuple[str, ...] | None = None) -> QueuedEvent:
    """The process-queue message of a JSON event, its images stored and analysed."""
    model = validate_event(event)
    if roles is None:
        roles = () if model.event_type == "device_status" else ALL_ROLES
    if model.event_type == "face_capture" and "face" not in roles:
        roles = ("face", *roles)
    return QueuedEvent.of(model, received_at=RECEIVED_AT, key_id="k1", images=stored_images(model.event_id, roles))


def example_queued(event_type: str) -> QueuedEvent:
    event = example_events()[event_type]
    event["event_id"] = new_event_id()
    return queued(event)


assert len(EVENT_TYPES) == 6
