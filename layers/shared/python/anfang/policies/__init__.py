"""Redaction policies (docs/records.md): one versioned YAML allow-list per destination, validated at load.

A policy names, per event type, each field path it lets through with one action and each image role with
one image action; anything it does not name is dropped. Loading checks every path against the event models
and every action against what the field can take, so a typo fails at cold start, not in a record.

>>> policy = load_policy("gov_cloud")
>>> policy.ref, policy.field_action("access", "person.id_number")
('gov_cloud@2', 'pseudonymize')
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from anfang.contracts import EVENT_MODELS, EVENT_TYPES, Box, EventType, ImageRole
from anfang.contracts.destinations import DESTINATIONS

__all__ = [
    "COMMON_PATHS",
    "DESTINATIONS",
    "FIELD_ACTIONS",
    "IMAGE_ACTIONS",
    "EventRules",
    "FieldAction",
    "FieldSpec",
    "ImageAction",
    "Policy",
    "PolicyError",
    "event_fields",
    "load_policy",
    "default_policies",
    "parse_policy",
]

FieldAction = Literal["keep", "mask", "pseudonymize", "encrypt", "generalize", "drop"]
ImageAction = Literal["original", "thumbnail", "thumbnail_faces_blurred", "none"]
FIELD_ACTIONS: Final[tuple[FieldAction, ...]] = get_args(FieldAction)
IMAGE_ACTIONS: Final[tuple[ImageAction, ...]] = get_args(ImageAction)
Kind = Literal["box", "enum", "text", "id_number", "phone", "plate", "device_id", "health_code", "ref"]

_HERE: Final = Path(__file__).resolve().parent

# What each kind of field can take. generalize: plate → province, id_number → division (6 digits),
# phone → carrier prefix (3 digits). Boxes, enums and the health-code view are kept or dropped whole.
_ALLOWED: Final[dict[Kind, frozenset[str]]] = {
    "box": frozenset({"keep", "drop"}),
    "health_code": frozenset({"keep", "drop"}),
    "ref": frozenset({"keep", "drop"}),
    "enum": frozenset({"keep", "pseudonymize", "encrypt", "drop"}),
    "text": frozenset({"keep", "mask", "pseudonymize", "encrypt", "drop"}),
    "id_number": frozenset(FIELD_ACTIONS),
    "phone": frozenset(FIELD_ACTIONS),
    "plate": frozenset(FIELD_ACTIONS),
    "device_id": frozenset({"keep", "pseudonymize"}),  # the record always names its device
}


class PolicyError(ValueError):
    """A policy file that does not load or validate."""


@dataclass(frozen=True)
class FieldSpec:
    """A leaf field of an event type: its dotted path, its kind and its type in the event model."""

    path: str
    kind: Kind
    annotation: Any


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _kind(name: str, annotation: Any) -> Kind:
    base = get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation
    if base is Box:
        return "box"
    if get_origin(base) is Literal:
        return "enum"
    if name in ("id_number", "phone", "plate"):
        return name  # type: ignore[return-value]
    return "text"


def _walk(model: type[BaseModel], prefix: str) -> dict[str, FieldSpec]:
    out: dict[str, FieldSpec] = {}
    for name, info in model.model_fields.items():
        annotation = _strip_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation is not Box:
            out.update(_walk(annotation, f"{prefix}{name}."))
        else:
            # Keep the constraints (patterns, lengths) of the field for the published schema.
            full = Annotated[(annotation, *info.metadata)] if info.metadata else annotation
            out[prefix + name] = FieldSpec(prefix + name, _kind(name, annotation), full)
    return out


#: Paths every event type has, named in a policy's ``common`` section.
COMMON_PATHS: Final[dict[str, FieldSpec]] = {
    "device_id": FieldSpec("device_id", "device_id", str),
    "direction": FieldSpec("direction", "enum", Literal["in", "out", "unknown"]),
    "health_code": FieldSpec("health_code", "health_code", object),
    # the source system's own id of the record (e.g. a camera's GA/T 1400 FaceID): lets a relay hand the
    # upstream the object id it may already hold; an opaque id, so it is kept whole or dropped
    "source_ref": FieldSpec("source_ref", "ref", str),
}
_BASE_FIELDS: Final = frozenset(
    {"event_id", "device_id", "captured_at", "direction", "source_ref", "images", "event_type"}
)


@cache
def event_fields(event_type: EventType) -> dict[str, FieldSpec]:
    """The leaf fields of an event type's typed bodies, by dotted path (``person.id_number``)."""
    model = EVENT_MODELS[event_type]
    out: dict[str, FieldSpec] = {}
    for name, info in model.model_fields.items():
        if name in _BASE_FIELDS:
            continue
        annotation = _strip_optional(info.annotation)
        out.update(_walk(annotation, f"{name}."))
    return out


PolicyName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]


class EventRules(BaseModel):
    """What a policy lets through of one event type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: dict[str, FieldAction] = Field(default_factory=dict)
    images: dict[ImageRole, ImageAction] = Field(default_factory=dict)


class Policy(BaseModel):
    """One destination's redaction policy (an allow-list)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: PolicyName = Field(description="the destination this policy is for")
    version: int = Field(ge=1, description="bumped on every change; records carry <policy>@<version>")
    description: str = ""
    allow_face_images: bool = Field(
        default=False,
        description="false: no face image of any kind and no original/thumbnail of any image that may show a face",
    )
    common: dict[str, FieldAction] = Field(default_factory=dict)
    events: dict[EventType, EventRules] = Field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``<policy>@<version>``, as records carry it."""
        return f"{self.policy}@{self.version}"

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = []
        for path, action in self.common.items():
            spec = COMMON_PATHS.get(path)
            if spec is None:
                problems.append(f"common.{path}: not a common field ({', '.join(COMMON_PATHS)})")
            elif action not in _ALLOWED[spec.kind]:
                problems.append(f"common.{path}: {action} does not apply to a {spec.kind} field")
        if self.common.get("device_id") is None:
            problems.append("common.device_id: must be named (keep or pseudonymize)")
        for event_type, rules in self.events.items():
            fields = event_fields(event_type)
            for path, action in rules.fields.items():
                spec = fields.get(path)
                if spec is None:
                    problems.append(f"events.{event_type}.fields.{path}: no such field")
                elif action not in _ALLOWED[spec.kind]:
                    problems.append(
                        f"events.{event_type}.fields.{path}: {action} does not apply to a {spec.kind} field"
                    )
            if not self.allow_face_images:
                for role, image_action in rules.images.items():
                    if role == "face" and image_action != "none":
                        problems.append(f"events.{event_type}.images.face: {image_action} sends a face image")
                    elif image_action in ("original", "thumbnail"):
                        problems.append(f"events.{event_type}.images.{role}: {image_action} may show a face unblurred")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def field_action(self, event_type: EventType, path: str) -> FieldAction:
        """The action for a path (``drop`` when the policy does not name it)."""
        if path in COMMON_PATHS:
            return self.common.get(path, "drop")
        rules = self.events.get(event_type)
        return rules.fields.get(path, "drop") if rules else "drop"

    def image_action(self, event_type: EventType, role: ImageRole) -> ImageAction:
        """The action for an image role (``none`` when the policy does not name it)."""
        rules = self.events.get(event_type)
        return rules.images.get(role, "none") if rules else "none"


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """Parse and validate a policy document; raises ``PolicyError`` naming every problem."""
    try:
        data = yaml.safe_load(text)
        return Policy.model_validate(data)
    except (yaml.YAMLError, ValueError) as exc:
        raise PolicyError(f"{source}: {exc}") from exc


def load_policy(name: str, directory: Path | None = None) -> Policy:
    """Load ``<name>.yaml`` from ``directory`` (default: the packaged defaults) and check it names itself."""
    path = (directory or _HERE) / f"{name}.yaml"
    policy = parse_policy(path.read_text(encoding="utf-8"), source=str(path))
    if policy.policy != name:
        raise PolicyError(f"{path}: declares policy {policy.policy!r}, expected {name!r}")
    return policy


def default_policies() -> dict[str, Policy]:
    """The packaged default policy of every destination."""
    return {name: load_policy(name) for name in DESTINATIONS}


assert set(EVENT_TYPES) == set(EVENT_MODELS)
