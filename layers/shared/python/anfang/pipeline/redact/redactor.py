"""The redactor: one destination's record of an event, built from its policy (docs/records.md).

Allow-list projection: only what the policy names reaches the record, each value through its action
(:mod:`.actions`). ``pseudonymize`` is HMAC-SHA256 under the destination's secret (the same value gives the
same token in every field of its kind, so an ID number pseudonymised in an access event matches the visitor
event's); ``encrypt`` seals the value with AES-256-GCM under one KMS data key per batch and destination
(:mod:`.keys`), binding the ``{destination, event_id, field}`` context as associated data. Records are
validated against the record model (:mod:`.record`) on plain dicts (:mod:`.fastpath`). No AWS calls besides
the data key.

>>> keys = DataKeys(kms, {"police_video": police_key_arn})
>>> redactor = Redactor(load_policy("police_video"), secret=b"...", town="330106", buckets=buckets)
>>> record = redactor.record(queued, Enrichment(site=SiteView()), keys)
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel
from pydantic_core import SchemaError

from anfang.contracts import RECORD_SCHEMA, EventType, ImageAnalysis, QueuedEvent
from anfang.pipeline.enrich import Enrichment
from anfang.pipeline.thumbnails import THUMBNAIL_SIDES_PIXELS, thumbnail_size
from anfang.policies import COMMON_PATHS, ImageAction, Policy, event_fields

from .actions import encrypter, generalize, mask, pseudonymizer
from .fastpath import DictRecords
from .keys import DataKeys
from .record import record_model

__all__ = ["ImageBuckets", "Redactor", "analysis_json"]


@dataclass(frozen=True)
class ImageBuckets:
    """Where image references point: originals in the raw bucket, derived images in the image bucket."""

    raw_bucket: str
    image_bucket: str


#: A value's transform (``None`` for keep), called as ``op(value, event_id, keys)``.
_Op = Callable[[Any, str, "DataKeys"], Any]
#: A compiled part of the event: per key, in policy order, either a leaf's transform or the part below it.
_Tree = tuple[tuple[str, "_Op | None", "_Tree | None"], ...]


def _project(source: dict[str, Any], tree: _Tree, event_id: str, keys: DataKeys) -> dict[str, Any]:
    """The allow-listed part of ``source``: only the keys of ``tree``, each value through its transform."""
    out: dict[str, Any] = {}
    for key, op, below in tree:
        value = source.get(key)
        if value is None:
            continue
        if below is not None:
            if type(value) is dict:  # JSON objects are dicts; an exact check is cheaper than an ABC check
                part = _project(value, below, event_id, keys)
                if part:
                    out[key] = part
        else:
            out[key] = value if op is None else op(value, event_id, keys)
    return out


@dataclass(frozen=True)
class _Plan:
    """A policy compiled for one event type: its kept fields as a tree of bound transforms, and the image
    action of each role."""

    bodies: _Tree
    images: Mapping[str, ImageAction]  # roles with an action other than none


#: The fields of :class:`ImageAnalysis` a record leaves out when they are None (``quality`` and ``faces`` are
#: always there).
_ANALYSIS_OPTIONAL: Final = ("sharpness", "brightness", "contrast", "width", "height", "phash", "error")
assert set(ImageAnalysis.model_fields) == {"quality", "faces", *_ANALYSIS_OPTIONAL}, "a field analysis_json misses"
#: Image actions that release the picture unblurred: only with these may its perceptual hash go along.
_UNBLURRED: Final = frozenset({"original", "thumbnail"})


def analysis_json(analysis: ImageAnalysis, *, with_hash: bool = True) -> dict[str, Any]:
    """``analysis.model_dump(mode="json", exclude_none=True)`` without the serializer's per-call overhead;
    without ``phash`` (the hash of the unblurred picture) unless ``with_hash``.

    Every field of :class:`ImageAnalysis` is a JSON scalar except ``faces`` (a list of boxes of ints); the
    unit tests check this equals ``model_dump`` for analyses with every field set.
    """
    out = analysis.__dict__.copy()
    for key in _ANALYSIS_OPTIONAL:
        if out[key] is None:
            del out[key]
    if not with_hash:
        out.pop("phash", None)
    faces = out["faces"]
    out["faces"] = [box.__dict__.copy() for box in faces] if faces else []
    return out


_thumbnail_size: Final = functools.lru_cache(maxsize=256)(thumbnail_size)  # a fleet has a few image sizes


class Redactor:
    """Builds one destination's records from its policy.

    The policy is compiled once (per cold start) into a plan per event type: the kept paths as a tree whose
    leaves hold their bound action (HMAC state keyed per field kind, AAD precomputed), so a record costs a few
    dict lookups and the transforms themselves, not a walk of the policy. :meth:`record_json` validates
    against the record model's constraints on plain dicts (see :mod:`.fastpath`).
    """

    def __init__(self, policy: Policy, *, secret: bytes, town: str, buckets: ImageBuckets) -> None:
        if len(secret) < 16:
            raise ValueError("the pseudonym secret must be at least 16 bytes")
        self.policy = policy
        self.destination = policy.policy
        self.model = record_model(policy)
        self._validator = self.model.__pydantic_validator__
        try:
            self._dicts: DictRecords | None = DictRecords(self.model)
        except (TypeError, SchemaError):  # pragma: no cover - a model the dict path cannot mirror keeps the model path
            self._dicts = None
        self._secret = secret
        self._town = town
        self._buckets = buckets
        self._raw_prefix = f"s3://{buckets.raw_bucket}/"
        self._image_prefix = f"s3://{buckets.image_bucket}/"
        self._ref = policy.ref
        self._device_pseudonym = None if policy.common["device_id"] == "keep" else pseudonymizer(secret, "device_id")
        self._keep_direction = policy.common.get("direction") == "keep"
        self._keep_source_ref = policy.common.get("source_ref") == "keep"
        self._keep_health_code = policy.common.get("health_code") == "keep"
        self._plans: dict[str, _Plan] = {}
        self._iso: dict[tuple[dt.datetime, dt.timedelta | None], str] = {}

    def _plan(self, event_type: EventType) -> _Plan:
        plan = self._plans.get(event_type)
        if plan is None:
            plan = self._plans[event_type] = self._compile(event_type)
        return plan

    def _compile(self, event_type: EventType) -> _Plan:
        specs = event_fields(event_type)
        rules = self.policy.events.get(event_type)
        # nested dicts of the kept paths in policy order, leaves holding their bound transform
        nested: dict[str, Any] = {}
        for path, action in rules.fields.items() if rules else ():
            if action == "drop":
                continue
            *parents, leaf = path.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = (self._op(action, specs[path].kind, path, leaf),)

        def freeze(node: dict[str, Any]) -> _Tree:
            return tuple(
                (key, None, freeze(child)) if isinstance(child, dict) else (key, child[0], None)
                for key, child in node.items()
            )

        images: dict[str, ImageAction] = (
            {role: action for role, action in rules.images.items() if action != "none"} if rules else {}
        )
        return _Plan(bodies=freeze(nested), images=images)

    def _op(self, action: str, kind: str, path: str, leaf: str) -> _Op | None:
        if action == "keep":
            return None
        if action == "mask":
            return lambda value, _event_id, _keys: mask(kind, str(value))
        if action == "pseudonymize":
            return pseudonymizer(self._secret, leaf)  # the domain is the field's own name (id_number, phone...)
        if action == "generalize":
            return lambda value, _event_id, _keys: generalize(kind, str(value))
        return encrypter(self.destination, path)

    def _received_at(self, received_at: dt.datetime) -> str:
        # isoformat costs more than the rest of a record's header; a batch shares a few receive times. Keyed by
        # the offset too: equal instants in other offsets print differently.
        key = (received_at, received_at.utcoffset())
        text = self._iso.get(key)
        if text is None:
            if len(self._iso) >= 256:
                self._iso.clear()
            text = self._iso[key] = received_at.isoformat()
        return text

    def build(self, queued: QueuedEvent, enrichment: Enrichment, keys: DataKeys) -> dict[str, Any]:
        """The record as a JSON-ready dict (not yet validated: see :meth:`record`)."""
        event = queued.event
        event_type = queued.event_type
        plan = self._plans.get(event_type) or self._plan(event_type)
        event_id = queued.event_id
        pseudonymize_device = self._device_pseudonym
        received_at = queued.received_at
        record: dict[str, Any] = {
            "schema": RECORD_SCHEMA,
            "event_id": event_id,
            "event_type": event_type,
            "town": self._town,
            "device_id": queued.device_id if pseudonymize_device is None else pseudonymize_device(queued.device_id),
            "site": enrichment.site_json,
            "captured_at": event["captured_at"],
            "received_at": self._iso.get((received_at, received_at.utcoffset())) or self._received_at(received_at),
        }
        if self._keep_direction and "direction" in event:
            record["direction"] = event["direction"]
        if self._keep_source_ref and event.get("source_ref") is not None:
            record["source_ref"] = event["source_ref"]
        if self._keep_health_code and enrichment.health_code is not None:
            record["health_code"] = enrichment.health_code.model_dump(mode="json")
        for body, _, below in plan.bodies:
            source = event.get(body)
            if type(source) is dict:
                part = _project(source, below, event_id, keys)  # type: ignore[arg-type]
                if part:
                    record[body] = part
        record["images"] = self._images(queued, plan.images) if queued.images else []
        record["redaction"] = {"policy": self._ref}
        return record

    def _images(self, queued: QueuedEvent, actions: Mapping[str, ImageAction]) -> list[dict[str, Any]]:
        images = []
        for stored in queued.images:
            role = stored.role
            action = actions.get(role)
            if action is None:
                continue
            image: dict[str, Any]
            if action == "original":
                image = {
                    "role": role,
                    "ref": self._raw_prefix + stored.ref,
                    "sha256": stored.sha256,
                    "width": stored.width,
                    "height": stored.height,
                }
            else:
                key = stored.derived.get(action)  # type: ignore[arg-type]
                analysis = stored.analysis
                # analysis failed or has not run: no derived image, never a fallback to a less redacted one
                if key is None or analysis is None or analysis.quality == "error":
                    continue
                # the analysis measured the picture upright (EXIF applied): the thumbnail's frame, not the header's
                width, height = _thumbnail_size(
                    analysis.width or stored.width,
                    analysis.height or stored.height,
                    THUMBNAIL_SIDES_PIXELS[action],  # type: ignore[index]
                )
                image = {
                    "role": role,
                    "ref": self._image_prefix + key,
                    "sha256": key[-68:-4],  # StoredImage validated the key: derived/<kind>/<sha256>.jpg
                    "width": width,
                    "height": height,
                }
            analysis = stored.analysis
            if analysis is not None:
                # a face-blurred image carries no hash of the unblurred picture
                image["analysis"] = analysis_json(analysis, with_hash=action in _UNBLURRED)
            images.append(image)
        return images

    def record(self, queued: QueuedEvent, enrichment: Enrichment, keys: DataKeys) -> BaseModel:
        """The record validated against this destination's record model (raises ``pydantic.ValidationError``)."""
        return self._validator.validate_python(self.build(queued, enrichment, keys))  # type: ignore[no-any-return]

    def record_json(self, queued: QueuedEvent, enrichment: Enrichment, keys: DataKeys) -> str:
        """The validated record as the JSON that is published."""
        if self._dicts is None:  # pragma: no cover - see fastpath.as_dicts
            return self.record(queued, enrichment, keys).model_dump_json(by_alias=True, exclude_none=True)
        # The same validation as record() (the record model's constraints), on dicts: no model instances.
        valid = self._dicts.validate(self.build(queued, enrichment, keys))
        return self._dicts.to_json(valid, by_alias=True, exclude_none=True).decode()


assert set(COMMON_PATHS) == {"device_id", "direction", "health_code", "source_ref"}
