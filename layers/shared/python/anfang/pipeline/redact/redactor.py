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
import binascii
import datetime as dt
import functools
import hashlib
import hmac
import itertools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, create_model
from pydantic_core import SchemaError, SchemaSerializer, SchemaValidator

from anfang.contracts import (
    RECORD_SCHEMA,
    Envelope,
    EventType,
    HealthCodeView,
    ImageAnalysis,
    QueuedEvent,
    RecordImage,
    Redaction,
    SiteView,
    plate_province,
)
from anfang.contracts.types import Direction, EventId, TownCode
from anfang.policies import COMMON_PATHS, FieldSpec, ImageAction, Policy, event_fields
from anfang.thumbnails import thumbnail_size

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
    """What the enrich stage adds to an event (the enricher shares one per device among the events without a
    health code)."""

    site: SiteView
    health_code: HealthCodeView | None = None

    @functools.cached_property
    def site_json(self) -> dict[str, Any]:
        """The site as JSON, made once per enrichment (records never mutate it; JSON dumps share it)."""
        # SiteView holds only optional strings: its JSON dump is its non-None attributes
        return {k: v for k, v in self.site.__dict__.items() if v is not None}


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


_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def _pseudonymizer(secret: bytes, domain: str) -> Callable[..., str]:
    """:func:`pseudonym` with the key and domain absorbed once.

    HMAC (RFC 2104) spelled out over two precomputed SHA-256 states, so a value costs two state copies and
    two compressions of C code and no Python-level ``hmac.HMAC`` object; the unit tests check it equals
    :func:`pseudonym`.
    """
    key = hashlib.sha256(secret).digest() if len(secret) > 64 else secret
    key = key.ljust(64, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(domain.encode() + b"\x00")
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    inner_copy, outer_copy, b2a = inner.copy, outer.copy, binascii.b2a_base64

    def apply(value: Any, _event_id: str = "", _keys: Any = None) -> str:  # also an _Op: no wrapper call
        mac = inner_copy()
        mac.update((value if type(value) is str else str(value)).encode())
        out = outer_copy()
        out.update(mac.digest())
        return PSEUDONYM_PREFIX + b2a(out.digest()[:18], newline=False).translate(_URLSAFE).decode("ascii")

    return apply


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


class DataKey:
    """One data key of one batch and destination, with its AES-GCM nonce sequence.

    Nonces are deterministic (NIST SP 800-38D 8.2.1): a random 4-byte fixed field and a 64-bit counter, so
    no two envelopes under one key share a nonce (random 96-bit nonces only make a repeat unlikely), and a
    field costs no ``getrandom`` system call.
    """

    __slots__ = ("aead", "edk", "kid", "next_nonce")

    def __init__(self, kid: str, edk: str, aead: AESGCM) -> None:
        self.kid, self.edk, self.aead = kid, edk, aead
        fixed = os.urandom(4)
        counter = itertools.count(1)
        self.next_nonce: Callable[[], bytes] = lambda: fixed + next(counter).to_bytes(8, "big")


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


_PLAINTEXT_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_encode_str: Final[Callable[[str], str]] = json.encoder.encode_basestring


def _encrypter(destination: str, field: str) -> Callable[[Any, str, DataKeys], dict[str, str]]:
    """Envelope encryption of one field for one destination; the AAD (:func:`encryption_aad`) is precomputed
    around the event id, so a value costs one JSON encode, one AES-GCM seal and two base64 encodes."""
    # encryption_aad sorts its keys: destination, event_id, field. Only the event id varies per record.
    head = json.dumps({"destination": destination}, separators=(",", ":"))[:-1].encode() + b',"event_id":"'
    tail = b'","field":' + json.dumps(field).encode() + b"}"
    b2a = binascii.b2a_base64
    encode = _PLAINTEXT_ENCODER.encode  # json.dumps with options builds a new encoder on every call
    encode_str = _encode_str  # what encode() does for a str, without its Python-level dispatch

    def apply(value: Any, event_id: str, keys: DataKeys) -> dict[str, str]:
        key = keys.for_destination(destination)
        iv = key.next_nonce()
        plaintext = encode_str(value) if type(value) is str else encode(value)
        # an EventId is a validated UUID string: its JSON form is itself in quotes (no escapes)
        ct = key.aead.encrypt(iv, plaintext.encode(), head + event_id.encode() + tail)
        return {
            "enc": "A256GCM",
            "kid": key.kid,
            "edk": key.edk,
            "iv": b2a(iv, newline=False).decode(),
            "ct": b2a(ct, newline=False).decode(),
            "field": field,
        }

    return apply


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


_MODEL_KEYS: Final = frozenset({"type", "cls", "schema", "config", "ref", "metadata", "custom_init", "root_model"})
_MODEL_FIELDS_KEYS: Final = frozenset({"type", "fields", "model_name", "computed_fields"})
_FIELD_KEYS: Final = frozenset({"type", "schema", "validation_alias", "serialization_alias", "metadata"})


def _as_dicts(schema: Any) -> Any:
    """A model's core schema with every model turned into a typed dict of the same fields.

    The same field schemas (types, patterns, lengths, literals), aliases, config and ``extra="forbid"``: it
    accepts and rejects what the model does and serialises the same JSON, without building a model instance
    per record, image and body. Raises ``TypeError`` on anything it does not know how to carry over (model
    validators, custom ``__init__``, computed fields), so such a model keeps the model path.
    """
    if isinstance(schema, list):
        return [_as_dicts(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type", "").startswith("function-") or schema.get("type") == "model-fields":
        raise TypeError(f"cannot carry over a {schema['type']} schema")
    if schema.get("type") != "model":
        return {key: value if key == "metadata" else _as_dicts(value) for key, value in schema.items()}
    inner = schema["schema"]
    if set(schema) - _MODEL_KEYS or schema.get("custom_init") or schema.get("root_model"):
        raise TypeError(f"cannot carry over model keys {sorted(set(schema) - _MODEL_KEYS)}")
    if inner.get("type") != "model-fields" or inner.get("computed_fields") or set(inner) - _MODEL_FIELDS_KEYS:
        raise TypeError(f"cannot carry over {inner.get('type')} of {schema.get('ref')}")
    fields = {}
    for name, field in inner["fields"].items():
        if set(field) - _FIELD_KEYS:
            raise TypeError(f"cannot carry over field keys {sorted(set(field) - _FIELD_KEYS)} of {name}")
        converted = _as_dicts(field["schema"])
        fields[name] = {
            **{key: value for key, value in field.items() if key != "schema"},
            "type": "typed-dict-field",
            "schema": converted,
            "required": converted.get("type") != "default",
        }
    config = schema.get("config") or {}
    out: dict[str, Any] = {"type": "typed-dict", "fields": fields, "config": config}
    if "extra_fields_behavior" in config:
        out["extra_behavior"] = config["extra_fields_behavior"]
    if "ref" in schema:
        out["ref"] = schema["ref"]
    return out


class _DictRecords:
    """Validates and serialises records as dicts against the record model's own constraints (see _as_dicts)."""

    def __init__(self, model: type[BaseModel]) -> None:
        schema = _as_dicts(model.__pydantic_core_schema__)
        config = schema.get("config")
        self.validate = SchemaValidator(schema, config).validate_python
        self.to_json = SchemaSerializer(schema, config).to_json


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
_ANALYSIS_OPTIONAL: Final = ("sharpness", "brightness", "contrast", "phash", "error")
assert set(ImageAnalysis.model_fields) == {"quality", "faces", *_ANALYSIS_OPTIONAL}, "a field _analysis_json misses"


def _analysis_json(analysis: ImageAnalysis) -> dict[str, Any]:
    """``analysis.model_dump(mode="json", exclude_none=True)`` without the serializer's per-call overhead.

    Every field of :class:`ImageAnalysis` is a JSON scalar except ``faces`` (a list of boxes of ints); the
    unit tests check this equals ``model_dump`` for analyses with every field set.
    """
    out = analysis.__dict__.copy()
    for key in _ANALYSIS_OPTIONAL:
        if out[key] is None:
            del out[key]
    faces = out["faces"]
    out["faces"] = [box.__dict__.copy() for box in faces] if faces else []
    return out


_thumbnail_size: Final = functools.lru_cache(maxsize=256)(thumbnail_size)  # a fleet has a few image sizes


class Redactor:
    """Builds one destination's records from its policy.

    The policy is compiled once (per cold start) into a plan per event type: the kept paths as a tree whose
    leaves hold their bound action (HMAC state keyed per field kind, AAD precomputed), so a record costs a few
    dict lookups and the transforms themselves, not a walk of the policy. :meth:`record_json` validates
    against the record model's constraints on plain dicts (see ``_as_dicts``).
    """

    def __init__(self, policy: Policy, *, secret: bytes, town: str, buckets: ImageBuckets) -> None:
        if len(secret) < 16:
            raise ValueError("the pseudonym secret must be at least 16 bytes")
        self.policy = policy
        self.destination = policy.policy
        self.model = record_model(policy)
        self._validator = self.model.__pydantic_validator__
        try:
            self._dicts: _DictRecords | None = _DictRecords(self.model)
        except (TypeError, SchemaError):  # pragma: no cover - a model the dict path cannot mirror keeps the model path
            self._dicts = None
        self._secret = secret
        self._town = town
        self._buckets = buckets
        self._raw_prefix = f"s3://{buckets.raw_bucket}/"
        self._image_prefix = f"s3://{buckets.image_bucket}/"
        self._ref = policy.ref
        self._device_pseudonym = None if policy.common["device_id"] == "keep" else _pseudonymizer(secret, "device_id")
        self._keep_direction = policy.common.get("direction") == "keep"
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
            return _pseudonymizer(self._secret, leaf)  # the domain is the field's own name (id_number, phone...)
        if action == "generalize":
            return lambda value, _event_id, _keys: _generalize(kind, str(value))
        return _encrypter(self.destination, path)

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
                if key is None:  # analysis failed or has not run: no derived image, never a fallback to more
                    continue
                width, height = _thumbnail_size(stored.width, stored.height)
                image = {
                    "role": role,
                    "ref": self._image_prefix + key,
                    "sha256": key[-68:-4],  # StoredImage validated the key: derived/<kind>/<sha256>.jpg
                    "width": width,
                    "height": height,
                }
            analysis = stored.analysis
            if analysis is not None:
                image["analysis"] = _analysis_json(analysis)
            images.append(image)
        return images

    def record(self, queued: QueuedEvent, enrichment: Enrichment, keys: DataKeys) -> BaseModel:
        """The record validated against this destination's record model (raises ``pydantic.ValidationError``)."""
        return self._validator.validate_python(self.build(queued, enrichment, keys))  # type: ignore[no-any-return]

    def record_json(self, queued: QueuedEvent, enrichment: Enrichment, keys: DataKeys) -> str:
        """The validated record as the JSON that is published."""
        if self._dicts is None:  # pragma: no cover - see _as_dicts
            return self.record(queued, enrichment, keys).model_dump_json(by_alias=True, exclude_none=True)
        # The same validation as record() (the record model's constraints), on dicts: no model instances.
        valid = self._dicts.validate(self.build(queued, enrichment, keys))
        return self._dicts.to_json(valid, by_alias=True, exclude_none=True).decode()


assert set(COMMON_PATHS) == {"device_id", "direction", "health_code"}
