"""The record model of a destination, derived from its policy: what the published JSON Schema says.

Only the kept fields appear, each typed by its action (an envelope for ``encrypt``, a pattern for
``pseudonymize``); ``extra="forbid"`` everywhere, so a record can never carry what the policy did not name.
No AWS calls.

>>> model = record_model(load_policy("gov_cloud"))
>>> model.model_json_schema()["title"]
'GovCloudRecord'
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, create_model

from anfang.contracts import (
    RECORD_SCHEMA,
    BlurredRecordImage,
    Envelope,
    EventType,
    HealthCodeView,
    RecordImage,
    Redaction,
    SiteView,
)
from anfang.contracts.types import Direction, EventId, Label, TownCode
from anfang.policies import FieldSpec, Policy, event_fields

__all__ = ["record_model"]


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
    if policy.common.get("source_ref", "drop") == "keep":
        fields["source_ref"] = (Label | None, Field(default=None, description="the source system's own id"))
    if policy.common.get("health_code", "drop") == "keep":
        fields["health_code"] = (HealthCodeView | None, None)
    for body, tree in bodies.items():
        fields[body] = (_body_model(f"{title}_{body}", tree) | None, None)
    # A policy that releases no unblurred picture gets images whose analysis has no hash of one: a record
    # with a phash there does not validate, whatever the redactor does.
    unblurred = any(
        action in ("original", "thumbnail") for rules in policy.events.values() for action in rules.images.values()
    )
    image: Any = RecordImage if unblurred else BlurredRecordImage
    fields["images"] = (list[image], Field(default_factory=list))
    fields["redaction"] = (Redaction, ...)
    config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, title=f"{title}Record")
    model: type[BaseModel] = create_model(f"{title}Record", __config__=config, **fields)
    return model
