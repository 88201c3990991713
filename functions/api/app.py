"""anfang ingest API (Chalice on Lambda, handler ``app.app``): routes only; the logic lives in the anfang layer.

Cold start: the environment is validated (``ApiSettings``) and the AWS clients are created once
(``build_api``). Every route hands the raw request to a verb of the layer and returns what it answers.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from aws_lambda_powertools import Logger
from chalice.app import Chalice, Request, Response

from anfang.api.http import HttpResponse, json_response, problem_response
from anfang.api.settings import ApiSettings
from anfang.api.wiring import build_api
from anfang.contracts.problems import ErrorCode

settings = ApiSettings.from_env(os.environ)
services = build_api(settings)
logger = Logger(service=settings.service_name)  # log_event stays off: payloads are never logged

app = Chalice(app_name="anfang-api")
gc.freeze()  # everything built at cold start lives as long as the container: keep it out of the GC's scans
ANY_CONTENT_TYPE = ["*/*"]  # the layer answers 415 itself, as problem+json


@app.middleware("http")
def observe(event: Request, get_response: Callable[[Request], Response]) -> Response:
    response = get_response(event)
    logger.info(
        "request handled",
        extra={"method": event.method, "route": event.path, "status": response.status_code, "town": settings.town_code},
    )
    if services.metrics.metric_set:
        services.metrics.flush_metrics()
    return response


@app.route("/v1/health", methods=["GET"])
def health() -> Response:
    return _reply(json_response(200, {"status": "ok"}))


@app.route("/v1/events", methods=["POST"], content_types=ANY_CONTENT_TYPE)
def post_events() -> Response:
    path, headers, body = _signed_request()

    def handle() -> HttpResponse:
        outcome = services.ingest.handle("POST", path, headers, body)
        logger.info("events handled", extra=outcome.summary)  # counts, key id and code: never payload values
        return outcome.response

    return _guard(handle)


@app.route("/v1/health-codes", methods=["POST"], content_types=ANY_CONTENT_TYPE)
def post_health_codes() -> Response:
    path, headers, body = _signed_request()
    return _guard(lambda: _health().post_deltas(path, headers, body))


@app.route("/v1/health-codes", methods=["DELETE"], content_types=ANY_CONTENT_TYPE)
def purge_health_codes() -> Response:
    path, headers, body = _signed_request()
    return _guard(lambda: _health().purge(path, headers, body))


@app.route("/v1/health-codes/snapshots", methods=["POST"], content_types=ANY_CONTENT_TYPE)
def create_snapshot() -> Response:
    path, headers, body = _signed_request()
    return _guard(lambda: _health().create_snapshot(path, headers, body))


@app.route("/v1/health-codes/snapshots/{snapshot_id}", methods=["GET"], content_types=ANY_CONTENT_TYPE)
def get_snapshot(snapshot_id: str) -> Response:
    path, headers, body = _signed_request()
    return _guard(lambda: _health().get_snapshot(path, headers, body, snapshot_id))


# ---------------------------------------------------------------------------------------------------- plumbing


class _DisabledError(Exception):
    pass


def _health() -> Any:
    if services.health is None:
        raise _DisabledError
    return services.health


def _signed_request() -> tuple[str, dict[str, str], bytes]:
    """The path the client called (no stage prefix, for ``@path``), the headers and the raw body bytes."""
    request = app.current_request
    assert request is not None
    path = request.context.get("resourcePath") or request.path
    for name, value in (request.uri_params or {}).items():
        path = path.replace("{" + name + "}", quote(value, safe=""))
    raw = request.raw_body
    body = raw.encode("utf-8") if isinstance(raw, str) else (raw or b"")
    return path, dict(request.headers), body


def _guard(handle: Callable[[], HttpResponse]) -> Response:
    try:
        return _reply(handle())
    except _DisabledError:
        return _reply(problem_response(ErrorCode.NOT_FOUND, "health codes are switched off for this town"))
    except Exception:
        logger.exception("unhandled error")
        return _reply(problem_response(ErrorCode.INTERNAL_ERROR))


def _reply(response: HttpResponse) -> Response:
    headers: dict[str, str | list[str]] = {**response.headers}
    return Response(body=response.body, status_code=response.status, headers=headers)
