"""The redactor's fast path: validate and serialise records as plain dicts under the record model's schema.

A clever path, kept in a module of its own (STYLE): pydantic-core's schema of the record model is rewritten so
that every model becomes a typed dict with the same fields and constraints. The unit tests check it accepts,
rejects and serialises exactly as the model does; ``tests/bench`` measures why it is worth it.

>>> records = DictRecords(record_model(policy))
>>> records.to_json(records.validate(record_dict), by_alias=True, exclude_none=True)
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel
from pydantic_core import SchemaSerializer, SchemaValidator

__all__ = ["DictRecords", "as_dicts"]

_MODEL_KEYS: Final = frozenset({"type", "cls", "schema", "config", "ref", "metadata", "custom_init", "root_model"})
_MODEL_FIELDS_KEYS: Final = frozenset({"type", "fields", "model_name", "computed_fields"})
_FIELD_KEYS: Final = frozenset({"type", "schema", "validation_alias", "serialization_alias", "metadata"})


def as_dicts(schema: Any) -> Any:
    """A model's core schema with every model turned into a typed dict of the same fields.

    The same field schemas (types, patterns, lengths, literals), aliases, config and ``extra="forbid"``: it
    accepts and rejects what the model does and serialises the same JSON, without building a model instance
    per record, image and body. Raises ``TypeError`` on anything it does not know how to carry over (model
    validators, custom ``__init__``, computed fields), so such a model keeps the model path.
    """
    if isinstance(schema, list):
        return [as_dicts(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type", "").startswith("function-") or schema.get("type") == "model-fields":
        raise TypeError(f"cannot carry over a {schema['type']} schema")
    if schema.get("type") != "model":
        return {key: value if key == "metadata" else as_dicts(value) for key, value in schema.items()}
    inner = schema["schema"]
    if set(schema) - _MODEL_KEYS or schema.get("custom_init") or schema.get("root_model"):
        raise TypeError(f"cannot carry over model keys {sorted(set(schema) - _MODEL_KEYS)}")
    if inner.get("type") != "model-fields" or inner.get("computed_fields") or set(inner) - _MODEL_FIELDS_KEYS:
        raise TypeError(f"cannot carry over {inner.get('type')} of {schema.get('ref')}")
    fields = {}
    for name, field in inner["fields"].items():
        if set(field) - _FIELD_KEYS:
            raise TypeError(f"cannot carry over field keys {sorted(set(field) - _FIELD_KEYS)} of {name}")
        converted = as_dicts(field["schema"])
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


class DictRecords:
    """Validates and serialises records as dicts against the record model's own constraints (see as_dicts)."""

    def __init__(self, model: type[BaseModel]) -> None:
        schema = as_dicts(model.__pydantic_core_schema__)
        config = schema.get("config")
        self.validate = SchemaValidator(schema, config).validate_python
        self.to_json = SchemaSerializer(schema, config).to_json
