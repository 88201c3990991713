"""The API's route table and its OpenAPI 3.1 document, generated from the pydantic models.

``ROUTES`` is the one list of routes: the Chalice app registers exactly these (a contract test compares
``app.routes`` with it) and :func:`openapi` describes them. Importable without AWS clients.

>>> document = openapi()
>>> sorted(document["paths"])[:3]
['/v1/events', '/v1/health', '/v1/health-codes']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from anfang import __version__
from anfang.contracts.events import BatchResponse, EventBatch
from anfang.contracts.healthcodes import (
    HealthCodeDeltaBatch,
    HealthCodeDeltaResponse,
    PurgeResponse,
    SnapshotCreated,
    SnapshotInfo,
    SnapshotRequest,
)
from anfang.contracts.limits import MAX_BODY_BYTES, MAX_EVENTS_PER_BATCH, MAX_HEALTH_CODE_DELTAS
from anfang.contracts.problems import PROBLEM_CONTENT_TYPE, ErrorCode, Problem

__all__ = ["ROUTES", "Route", "openapi"]


class Liveness(BaseModel):
    """``GET /v1/health``: the function answers; says nothing about its internals."""

    status: str = "ok"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    operation_id: str
    summary: str
    role: str | None
    success: int
    response: type[BaseModel]
    request: type[BaseModel] | None = None
    errors: tuple[ErrorCode, ...] = field(default=())


_AUTH: Final = (
    ErrorCode.SIGNATURE_MISSING,
    ErrorCode.FORBIDDEN_ROLE,
    ErrorCode.PAYLOAD_TOO_LARGE,
    ErrorCode.RATE_LIMITED,
    ErrorCode.RETRY_LATER,
)
_BODY: Final = (ErrorCode.MALFORMED_JSON, ErrorCode.PAYLOAD_INVALID, ErrorCode.UNSUPPORTED_MEDIA_TYPE)

ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/v1/health", "getHealth", "Liveness (no authentication)", None, 200, Liveness),
    Route(
        "POST",
        "/v1/events",
        "postEvents",
        f"Post a signed batch of up to {MAX_EVENTS_PER_BATCH} device events (partial acceptance)",
        "device",
        202,
        BatchResponse,
        EventBatch,
        (*_AUTH, *_BODY, ErrorCode.FORBIDDEN_DEVICE),
    ),
    Route(
        "POST",
        "/v1/health-codes",
        "postHealthCodeDeltas",
        f"Post up to {MAX_HEALTH_CODE_DELTAS} health-code delta records (health commission)",
        "health_commission",
        200,
        HealthCodeDeltaResponse,
        HealthCodeDeltaBatch,
        (*_AUTH, *_BODY, ErrorCode.NOT_FOUND),
    ),
    Route(
        "DELETE",
        "/v1/health-codes",
        "purgeHealthCodes",
        "Delete every health-code record and uploaded snapshot of the town (health commission)",
        "health_commission",
        200,
        PurgeResponse,
        errors=(*_AUTH, ErrorCode.NOT_FOUND),
    ),
    Route(
        "POST",
        "/v1/health-codes/snapshots",
        "createHealthCodeSnapshot",
        "Start a full snapshot of a declared size and SHA-256: returns its id, a presigned PUT URL bound to that "
        "content (signed Content-Length, Content-Type, x-amz-checksum-sha256, If-None-Match: *) and the headers "
        "the PUT must carry",
        "health_commission",
        201,
        SnapshotCreated,
        SnapshotRequest,
        errors=(*_AUTH, *_BODY, ErrorCode.NOT_FOUND),
    ),
    Route(
        "GET",
        "/v1/health-codes/snapshots/{snapshot_id}",
        "getHealthCodeSnapshot",
        "Import status and counts of a snapshot",
        "health_commission",
        200,
        SnapshotInfo,
        errors=(*_AUTH, ErrorCode.NOT_FOUND),
    ),
)

_SIGNATURE_HEADERS: Final = (
    ("Signature-Input", 'RFC 9421 signature input, label sig1: ("@method" "@path" "content-digest" "content-type")'),
    ("Signature", "RFC 9421 Ed25519 signature, label sig1"),
    ("Content-Digest", "RFC 9530 sha-256 digest of the raw body (also of an empty body)"),
)


def _problem_responses(codes: tuple[ErrorCode, ...]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(code.http_status, []).append(code.value)
    if ErrorCode.SIGNATURE_MISSING in codes:
        by_status[401] = [c.value for c in ErrorCode if c.http_status == 401]
        by_status[403] = sorted({*by_status.get(403, []), ErrorCode.FORBIDDEN_ROLE.value})
    out: dict[str, Any] = {}
    for status, names in sorted(by_status.items()):
        headers = {"Date": {"schema": {"type": "string"}, "description": "server time (fix clock skew)"}}
        if status == ErrorCode.RATE_LIMITED.http_status:
            headers["Retry-After"] = {"schema": {"type": "integer"}, "description": "seconds until this key may send"}
        out[str(status)] = {
            "description": "problem+json with code " + ", ".join(sorted(names)),
            "headers": headers,
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the ingest API."""
    models: list[type[BaseModel]] = [Problem, Liveness]
    for route in ROUTES:
        models.append(route.response)
        if route.request is not None:
            models.append(route.request)
    unique = list(dict.fromkeys(models))
    _, schemas = models_json_schema(
        [(model, "validation") for model in unique], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, Any] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "responses": {
                str(route.success): {
                    "description": "success",
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{route.response.__name__}"}}
                    },
                },
                **_problem_responses(route.errors),
            },
        }
        parameters: list[dict[str, Any]] = []
        if "{snapshot_id}" in route.path:
            parameters.append(
                {
                    "name": "snapshot_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                }
            )
        if route.role is not None:
            operation["security"] = [{"httpMessageSignature": []}]
            operation["x-anfang-role"] = route.role
            parameters.extend(
                {"name": name, "in": "header", "required": True, "description": text, "schema": {"type": "string"}}
                for name, text in _SIGNATURE_HEADERS
            )
        if parameters:
            operation["parameters"] = parameters
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "description": f"JSON, at most {MAX_BODY_BYTES} bytes",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.request.__name__}"}}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "anfang ingest API",
            "version": __version__,
            "description": "Signed device events and health-code records for one town's anfang stack.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "httpMessageSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": "RFC 9421 HTTP Message Signatures, Ed25519 (docs/api.md); keyid in Signature-Input",
                }
            },
        },
    }
