"""The redact stage: build each destination's record of an event from its policy (DESIGN 4.4, 4.5).

Allow-list projection: only what the policy names reaches the record, each value through its action.
``pseudonymize`` is HMAC-SHA256 under the destination's secret (the same value gives the same token in every
field of its kind, so an ID number pseudonymised in an access event matches the visitor event's);
``encrypt`` seals the value with AES-256-GCM under one KMS data key per batch and destination, binding the
``{destination, event_id, field}`` context as associated data.

>>> keys = DataKeys(kms, {"police_video": police_key_arn})
>>> redactor = Redactor(load_policy("police_video"), secret=b"...", town="330106", buckets=buckets)
>>> record = redactor.record(queued, Enrichment(site=SiteView()), keys)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, create_model

from anfang.contracts import (
    RECORD_SCHEMA,
    Envelope,
    EventType,
    HealthCodeView,
    QueuedEvent,
    RecordImage,
    Redaction,
    SiteView,
    plate_province,
)
from anfang.contracts.types import Direction, EventId, TownCode
from anfang.policies import COMMON_PATHS, FieldSpec, Policy, event_fields
from anfang.thumbnails import derived_sha256, thumbnail_size

__all__ = [
    "DataKey",
    "DataKeys",
    "Enrichment",
    "ImageBuckets",
    "RedactError",
    "Redactor",
    "encryption_aad",
    "mask",
    "pseudonym",
    "record_model",
]

PSEUDONYM_PREFIX: Final = "pn_"


class RedactError(Exception):
    """A record that cannot be built (e.g. encryption asked for but no KMS key configured)."""

    code = "redact_failed"


@dataclass(frozen=True)
class Enrichment:
    """What the enrich stage adds to an event."""

    site: SiteView
    health_code: HealthCodeView | None = None


@dataclass(frozen=True)
class ImageBuckets:
    """Where image references point: originals in the raw bucket, derived images in the image bucket."""

    raw_bucket: str
    image_bucket: str


# ---------------------------------------------------------------------------------------------------- actions


def mask(kind: str, value: str) -> str:
    """Display masking: ID first 6 + last 4, mobile ``138****5678``, plate ``浙A****5``, text ``张*``."""
    if kind == "id_number" and len(value) == 18:
        return value[:6] + "*" * 8 + value[-4:]
    if kind == "phone" and len(value) == 11:
        return value[:3] + "****" + value[-4:]
    if kind == "plate":
        return value[:2] + "*" * (len(value) - 3) + value[-1:]
    return value[:1] + "*" * max(1, len(value) - 1)


def pseudonym(secret: bytes, domain: str, value: str) -> str:
    """A stable keyed token of ``value`` within ``domain`` (the field kind): ``pn_`` + 24 base64url characters.

    144 bits of HMAC-SHA256; base64url (C-accelerated) rather than hex, so a token practically never contains
    a run of digits that reads like a phone or ID number.
    """
    digest = hmac.new(secret, domain.encode() + b"\x00" + value.encode(), hashlib.sha256).digest()
    return PSEUDONYM_PREFIX + base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def _generalize(kind: str, value: str) -> str:
    if kind == "plate":
        return plate_province(value)
    if kind == "id_number":
        return value[:6]  # the administrative division of registration
    return value[:3]  # phone: the carrier prefix


def encryption_aad(destination: str, event_id: str, field: str) -> bytes:
    """The AES-GCM associated data binding an envelope to its destination, event and field."""
    return json.dumps(
        {"destination": destination, "event_id": event_id, "field": field}, sort_keys=True, separators=(",", ":")
    ).encode()


@dataclass(frozen=True)
class DataKey:
    kid: str
    edk: str
    aead: AESGCM


class DataKeys:
    """One KMS data key per destination for one batch, generated on first use (``GenerateDataKey``)."""

    def __init__(self, kms: Any, key_ids: Mapping[str, str]) -> None:
        self._kms = kms
        self._key_ids = dict(key_ids)
        self._keys: dict[str, DataKey] = {}

    def for_destination(self, destination: str) -> DataKey:
        key = self._keys.get(destination)
        if key is None:
            key_id = self._key_ids.get(destination)
            if not key_id:
                raise RedactError(f"policy {destination} encrypts a field but no KMS key is configured for it")
            out = self._kms.generate_data_key(
                KeyId=key_id, KeySpec="AES_256", EncryptionContext={"destination": destination}
            )
            key = DataKey(
                kid=out["KeyId"], edk=base64.b64encode(out["CiphertextBlob"]).decode(), aead=AESGCM(out["Plaintext"])
            )
            self._keys[destination] = key
        return key


def _encrypt(key: DataKey, destination: str, event_id: str, field: str, value: Any) -> dict[str, str]:
    iv = os.urandom(12)
    plaintext = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    ct = key.aead.encrypt(iv, plaintext, encryption_aad(destination, event_id, field))
    return {
        "enc": "A256GCM",
        "kid": key.kid,
        "edk": key.edk,
        "iv": base64.b64encode(iv).decode(),
        "ct": base64.b64encode(ct).decode(),
        "field": field,
    }


# ---------------------------------------------------------------------------------------------------- models


_PSEUDONYM = Annotated[
    str, StringConstraints(pattern=r"^pn_[A-Za-z0-9_-]{24}$"), Field(description="keyed pseudonym (HMAC-SHA256)")
]
_MASKED = Annotated[str, Field(description="masked for display")]
_GENERALIZED = Annotated[str, Field(description="generalised: plate → province, ID → division, phone → prefix")]


def _leaf_type(spec: FieldSpec, action: str) -> Any:
    return {
        "keep": spec.annotation,
        "encrypt": Envelope,
        "pseudonymize": _PSEUDONYM,
        "mask": _MASKED,
        "generalize": _GENERALIZED,
    }[action]


def _body_model(name: str, tree: dict[str, Any]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for key, node in tree.items():
        annotation = _body_model(f"{name}_{key}", node) if isinstance(node, dict) else node
        fields[key] = (annotation | None, None)
    config = ConfigDict(extra="forbid", frozen=True)
    model: type[BaseModel] = create_model(name, __config__=config, **fields)
    return model


_MODELS: dict[str, type[BaseModel]] = {}


def record_model(policy: Policy) -> type[BaseModel]:
    """The record model of one destination as its policy shapes it (its JSON Schema is published)."""
    cache_key = policy.model_dump_json()
    model = _MODELS.get(cache_key)
    if model is None:
        model = _MODELS[cache_key] = _record_model(policy)
    return model


def _record_model(policy: Policy) -> type[BaseModel]:
    bodies: dict[str, dict[str, Any]] = {}
    for event_type, rules in policy.events.items():
        specs = event_fields(event_type)
        for path, action in rules.fields.items():
            if action == "drop":
                continue
            node = bodies
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = _leaf_type(specs[path], action)
    title = "".join(part.capitalize() for part in policy.policy.split("_"))
    device_id: Any = str if policy.common["device_id"] == "keep" else _PSEUDONYM
    fields: dict[str, Any] = {
        "schema_id": (Literal["anfang.record.v1"], Field(default=RECORD_SCHEMA, alias="schema")),
        "event_id": (EventId, ...),
        "event_type": (EventType, ...),
        "town": (TownCode, ...),
        "device_id": (device_id, Field(min_length=1, max_length=64)),
        "site": (SiteView, ...),
        "captured_at": (AwareDatetime, ...),
        "received_at": (AwareDatetime, ...),
    }
    if policy.common.get("direction", "drop") == "keep":
        fields["direction"] = (Direction | None, None)
    if policy.common.get("health_code", "drop") == "keep":
        fields["health_code"] = (HealthCodeView | None, None)
    for body, tree in bodies.items():
        fields[body] = (_body_model(f"{title}_{body}", tree) | None, None)
    fields["images"] = (list[RecordImage], Field(default_factory=list))
    fields["redaction"] = (Redaction, ...)
    config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, title=f"{title}Record")
    model: type[BaseModel] = create_model(f"{title}Record", __config__=config, **fields)
    return model


# ---------------------------------------------------------------------------------------------------- redactor


def _get(obj: Mapping[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        if type(node) is not dict:  # JSON objects are dicts; an exact check is cheaper than an ABC check
            return None
        node = node.get(part)
    return node


def _put(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = obj
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


class Redactor:
    """Builds one destination's records from its policy."""

    def __init__(self, policy: Policy, *, secret: bytes, town: str, buckets: ImageBuckets) -> None:
        if len(secret) < 16:
            raise ValueError("the pseudonym secret must be at least 16 bytes")
        self.policy = policy
        self.destination = policy.policy
        self.model = record_model(policy)
        self._secret = secret
        self._town = town
        self._buckets = buckets
        self._plans: dict[str, list[tuple[str, str, str]]] = {}

    def _plan(self, event_type: EventType) -> list[tuple[str, str, str]]:
        plan = self._plans.get(event_type)
        if plan is None:
            specs = event_fields(event_type)
            rules = self.policy.events.get(event_type)
            named = rules.fields.items() if rules else ()
            plan = [(path, action, specs[path].kind) for path, action in named if action != "drop"]
            self._plans[event_type] = plan
        return plan

    def _value(self, action: str, kind: str, path: str, value: Any, *, event_id: str, keys: DataKeys) -> Any:
        if action == "keep":
            return value
        if action == "mask":
            return mask(kind, str(value))
        if action == "pseudonymize":
            return pseudonym(self._secret, path.rsplit(".", 1)[-1], str(value))
        if action == "generalize":
            return _generalize(kind, str(value))
        return _encrypt(keys.for_destination(self.destination), self.destination, event_id, path, value)

    def build(self, queued: QueuedEvent, enrichment: Enrichment, keys: DataKeys) -> dict[str, Any]:
        """The record as a JSON-ready dict (not yet validated: see :meth:`record`)."""
        event = queued.event
        event_type = queued.event_type
        device_action = self.policy.common["device_id"]
        record: dict[str, Any] = {
            "schema": RECORD_SCHEMA,
            "event_id": queued.event_id,
            "event_type": event_type,
            "town": self._town,
            "device_id": queued.device_id
            if device_action == "keep"
            else pseudonym(self._secret, "device_id", queued.device_id),
            "site": enrichment.site.model_dump(mode="json", exclude_none=True),
            "captured_at": event["captured_at"],
            "received_at": queued.received_at.isoformat(),
        }
        if self.policy.common.get("direction") == "keep" and "direction" in event:
            record["direction"] = event["direction"]
        if self.policy.common.get("health_code") == "keep" and enrichment.health_code is not None:
            record["health_code"] = enrichment.health_code.model_dump(mode="json")
        for path, action, kind in self._plan(event_type):
            value = _get(event, path)
            if value is None:
                continue
            _put(record, path, self._value(action, kind, path, value, event_id=queued.event_id, keys=keys))
        record["images"] = self._images(queued)
        record["redaction"] = {"policy": self.policy.ref}
        return record

    def _images(self, queued: QueuedEvent) -> list[dict[str, Any]]:
        images = []
        for stored in queued.images:
            action = self.policy.image_action(queued.event_type, stored.role)
            if action == "none":
                continue
            analysis = stored.analysis.model_dump(mode="json", exclude_none=True) if stored.analysis else None
            if action == "original":
                ref, sha256, (width, height) = (
                    f"s3://{self._buckets.raw_bucket}/{stored.ref}",
                    stored.sha256,
                    (stored.width, stored.height),
                )
            else:
                key = stored.derived.get(action)
                if key is None:  # analysis failed or has not run: no derived image, never a fallback to more
                    continue
                ref = f"s3://{self._buckets.image_bucket}/{key}"
                sha256, (width, height) = derived_sha256(key), thumbnail_size(stored.width, stored.height)
            image: dict[str, Any] = {
                "role": stored.role,
                "ref": ref,
                "sha256": sha256,
                "width": width,
                "height": height,
            }
            if analysis is not None:
                image["analysis"] = analysis
            images.append(image)
        return images

    def record(self, queued: QueuedEvent, enrichment: Enrichment, keys: DataKeys) -> BaseModel:
        """The record validated against this destination's record model (raises ``pydantic.ValidationError``)."""
        return self.model.model_validate(self.build(queued, enrichment, keys))

    def record_json(self, queued: QueuedEvent, enrichment: Enrichment, keys: DataKeys) -> str:
        """The validated record as the JSON that is published."""
        return self.record(queued, enrichment, keys).model_dump_json(by_alias=True, exclude_none=True)


assert set(COMMON_PATHS) == {"device_id", "direction", "health_code"}
