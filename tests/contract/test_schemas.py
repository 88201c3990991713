"""Published schemas: no drift from the models, and examples that two independent validators accept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from anfang.contracts import EVENT_TYPES, BatchResponse, ErrorCode, EventBatch, EventResult, Problem, validate_event
from anfang_ops.schemas import generate

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"


def _load(rel: str) -> Any:
    return json.loads((SCHEMAS / rel).read_text(encoding="utf-8"))


def _validator(rel: str) -> jsonschema.protocols.Validator:
    schema = _load(rel)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(
        schema,
        format_checker=cls.FORMAT_CHECKER,
        registry=Registry().with_resource(schema["$id"], Resource.from_contents(schema)),
    )


def test_committed_schemas_equal_a_fresh_generation() -> None:
    expected = generate()
    committed = {p.relative_to(SCHEMAS).as_posix(): p.read_text(encoding="utf-8") for p in SCHEMAS.glob("**/*.json")}
    stale = sorted(set(committed) - set(expected))
    missing = sorted(set(expected) - set(committed))
    changed = sorted(rel for rel in set(expected) & set(committed) if expected[rel] != committed[rel])
    assert not (stale or missing or changed), f"run `make schemas`: stale={stale} missing={missing} changed={changed}"


def test_schemas_are_draft_2020_12() -> None:
    for path in SCHEMAS.glob("**/*.schema.json"):
        schema = json.loads(path.read_text(encoding="utf-8"))
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", path
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_example_validates_with_jsonschema_and_pydantic(event_type: str) -> None:
    example = _load(f"examples/{event_type}.json")
    _validator(f"events/v1/{event_type}.schema.json").validate(example)
    _validator("events/v1/event.schema.json").validate(example)
    assert validate_event(example).event_type == event_type


def test_batch_of_all_examples_validates_both_ways() -> None:
    batch = {"events": [_load(f"examples/{t}.json") for t in EVENT_TYPES]}
    _validator("events/v1/batch.schema.json").validate(batch)
    assert len(EventBatch.model_validate(batch).events) == len(EVENT_TYPES)


def test_schema_rejects_what_the_model_rejects() -> None:
    example = _load("examples/alarm.json")
    example["nickname"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        _validator("events/v1/alarm.schema.json").validate(example)
    batch = {"events": [_load("examples/alarm.json")] * 501}
    with pytest.raises(jsonschema.ValidationError):
        _validator("events/v1/batch.schema.json").validate(batch)


def test_response_and_problem_documents_match_their_schemas() -> None:
    response = BatchResponse.of([EventResult(event_id=None, status="accepted")])
    _validator("events/v1/batch_response.schema.json").validate(response.model_dump(mode="json"))
    problem = Problem.of(ErrorCode.SIGNATURE_EXPIRED, "created too old")
    _validator("events/v1/problem.schema.json").validate(problem.model_dump(mode="json", exclude_none=True))
    assert problem.type == "urn:anfang:problem:signature_expired"
    assert problem.status == 401
