"""Generate the published contracts in ``schemas/`` from the models (``make schemas``).

JSON Schema draft 2020-12 in validation mode. A contract test regenerates everything in memory and fails
when the committed files differ, so ``schemas/`` can never drift from the code.

    python -m anfang_ops.schemas schemas
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, TypeAdapter

from anfang.contracts import (
    EVENT_ADAPTER,
    EVENT_MODELS,
    BatchResponse,
    DestinationRecord,
    EventBatch,
    Problem,
)
from anfang.contracts.examples import example_events
from anfang.pipeline.redact import record_model
from anfang.policies import default_policies
from anfang_ops.openapi import openapi

DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"


def _schema(model: type[BaseModel] | TypeAdapter[Any], schema_id: str, title: str) -> dict[str, Any]:
    body = (
        model.json_schema(mode="validation")
        if isinstance(model, TypeAdapter)
        else model.model_json_schema(mode="validation")
    )
    return {"$schema": DRAFT, "$id": schema_id, **{**body, "title": title}}


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """Every generated file, keyed by its path relative to ``schemas/``."""
    files: dict[str, Any] = {
        "events/v1/batch.schema.json": _schema(EventBatch, "urn:anfang:schema:events:v1:batch", "EventBatch"),
        "events/v1/event.schema.json": _schema(EVENT_ADAPTER, "urn:anfang:schema:events:v1:event", "Event"),
        "events/v1/batch_response.schema.json": _schema(
            BatchResponse, "urn:anfang:schema:events:v1:batch_response", "BatchResponse"
        ),
        "events/v1/problem.schema.json": _schema(Problem, "urn:anfang:schema:events:v1:problem", "Problem"),
        "records/v1/record.schema.json": _schema(
            DestinationRecord, "urn:anfang:schema:records:v1:record", "DestinationRecord"
        ),
    }
    for event_type, model in EVENT_MODELS.items():
        files[f"events/v1/{event_type}.schema.json"] = _schema(
            model, f"urn:anfang:schema:events:v1:{event_type}", model.__name__
        )
    for destination, policy in default_policies().items():
        files[f"records/v1/{destination}.schema.json"] = {
            **_schema(record_model(policy), f"urn:anfang:schema:records:v1:{destination}", f"{destination} record"),
            "description": f"What {destination} receives, as its default policy {policy.ref} shapes it. "
            + policy.description,
        }
    for name, example in example_events().items():
        files[f"examples/{name}.json"] = example
    files["openapi.json"] = openapi()
    return {path: _dump(content) for path, content in sorted(files.items())}


def write(root: Path) -> list[Path]:
    """Write every generated file under ``root``; remove generated files that no longer exist."""
    written = []
    expected = generate()
    for rel, text in expected.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    for stale in root.glob("**/*.json"):
        if stale.relative_to(root).as_posix() not in expected:
            stale.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "schemas")
    paths = write(root)
    print(f"wrote {len(paths)} files under {root}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
