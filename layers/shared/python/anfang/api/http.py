"""HTTP edges of the API in one place: body limits, JSON parsing with a nesting limit, errors → problem+json.

Every failure of a request becomes an RFC 9457 problem document here and nowhere else, so each route
answers the same way for the same code. Responses are plain :class:`HttpResponse` values; the Chalice app
turns them into ``chalice.Response`` objects.

>>> parse_json(b'{"events": []}', max_bytes=MAX_BODY_BYTES)
{'events': []}
>>> problem_response(ErrorCode.UNKNOWN_KEY).status
401
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Final

from pydantic import BaseModel

from anfang.contracts.limits import MAX_BODY_BYTES, MAX_JSON_DEPTH
from anfang.contracts.problems import PROBLEM_CONTENT_TYPE, ContractError, ErrorCode, Problem

__all__ = [
    "JSON_CONTENT_TYPE",
    "HttpResponse",
    "RequestError",
    "error_response",
    "json_depth",
    "json_response",
    "parse_json",
    "problem_response",
    "require_json_content_type",
]

JSON_CONTENT_TYPE: Final = "application/json"
# A JSON string once escapes are gone: quote, anything but a quote, quote.
_STRING_RE: Final = re.compile(rb'"[^"]*"')
_OPEN: Final = frozenset(b"[{")
_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'[]{}"')


class RequestError(ContractError):
    """A request cannot be handled as a whole (``malformed_json``, ``payload_*``, ``unsupported_media_type``...)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response as the routes return it: status, headers and a text body."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, model: BaseModel | dict[str, Any]) -> HttpResponse:
    """A JSON response of a model (serialised by pydantic, nulls kept as the schema says) or of a plain dict."""
    body = (
        model.model_dump_json(by_alias=True)
        if isinstance(model, BaseModel)
        else json.dumps(model, separators=(",", ":"))
    )
    return HttpResponse(status, body, {"Content-Type": JSON_CONTENT_TYPE})


def problem_response(
    code: ErrorCode, detail: str | None = None, *, results: list[dict[str, Any]] | None = None
) -> HttpResponse:
    """The problem+json response of ``code``; every problem carries ``Date`` (clients fix clock skew on 401)."""
    problem = Problem.of(code, detail, results=results)
    return HttpResponse(
        problem.status,
        problem.model_dump_json(exclude_none=True),
        {"Content-Type": PROBLEM_CONTENT_TYPE, "Date": formatdate(usegmt=True), "Cache-Control": "no-store"},
    )


def error_response(exc: ContractError) -> HttpResponse:
    """The problem+json response of a typed error (its ``detail`` never carries payload values)."""
    response = problem_response(exc.code, exc.detail)
    retry_after = getattr(exc, "retry_after_secs", None)  # rate_limited says when to come back
    if isinstance(retry_after, int):
        response.headers["Retry-After"] = str(retry_after)
    return response


def require_json_content_type(headers: Mapping[str, str]) -> None:
    """Raise ``unsupported_media_type`` unless the request says ``application/json`` (charset utf-8 allowed)."""
    value = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    media, _, params = value.partition(";")
    charset = params.strip().lower()
    if media.strip().lower() != JSON_CONTENT_TYPE or charset not in ("", "charset=utf-8"):
        raise RequestError("Content-Type must be application/json", code=ErrorCode.UNSUPPORTED_MEDIA_TYPE)


def json_depth(body: bytes, limit: int) -> int:
    """The nesting depth of JSON text, counted without parsing and stopping once it passes ``limit``.

    Escaped backslashes and quotes are dropped first (JSON escapes pair left to right, as ``replace`` scans),
    then everything but brackets and quotes; strings are cut out of what is left (a bracket inside a
    string does not nest) and only the brackets are walked. All but the last walk run in C.
    """
    reduced = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    return _walk(_STRING_RE.sub(b"", reduced), limit)


def _walk(brackets: bytes, limit: int) -> int:
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes, *, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a request body: size limit, then nesting limit, then strict JSON (UTF-8, no NaN/Infinity).

    Raises ``RequestError`` with ``payload_too_large`` (size or depth) or ``malformed_json``.
    """
    if len(body) > max_bytes:
        raise RequestError(f"body is larger than {max_bytes} bytes", code=ErrorCode.PAYLOAD_TOO_LARGE)
    if json_depth(body, max_depth) > max_depth:
        raise RequestError(f"JSON nesting deeper than {max_depth}", code=ErrorCode.PAYLOAD_TOO_LARGE)
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        where = f" at position {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise RequestError(f"body is not valid UTF-8 JSON{where}", code=ErrorCode.MALFORMED_JSON) from None
