"""Schemathesis against schemas/openapi.json on the locally served API: no 5xx, responses match the spec.

Requests are signed for real (a ``requests`` auth hook signs the exact bytes sent), so generated bodies
reach validation, image checks, the queues and the health-code table, not only the signature check.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.config import SchemathesisConfig

from tests.api_stack import ROOT, signed
from tests.integration.api.conftest import ServedApi

# The coverage phase's boundary cases take over a minute on 2 cores for the event schema alone; the examples
# and fuzzing phases (a bounded number of hypothesis examples) keep this test well under one.
CONFIG = SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}}})
SCHEMA = schemathesis.openapi.from_path(ROOT / "schemas" / "openapi.json", config=CONFIG)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


class SignAs(requests.auth.AuthBase):
    """Signs each prepared request with the device key (events) or the partner key (health codes)."""

    def __init__(self, served: ServedApi) -> None:
        self.served = served

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        path = urlsplit(request.url).path
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        who = self.served.device if path == "/v1/events" else self.served.partner
        if path == "/v1/events":
            body = self._own_device(body)
            request.body = body
            request.headers["Content-Length"] = str(len(body))
        for name in ("Signature", "Signature-Input", "Content-Digest"):
            request.headers.pop(name, None)
        request.headers.update(
            signed(who.signer, request.method or "GET", path, body, content_type=_ctype(request.headers))
        )
        return request

    def _own_device(self, body: bytes) -> bytes:
        # Generated device ids would all be 403 forbidden_device; claim ours so validation is exercised.
        try:
            doc = json.loads(body)
        except ValueError:
            return body
        if isinstance(doc, dict) and isinstance(doc.get("events"), list):
            for event in doc["events"]:
                if isinstance(event, dict) and "device_id" in event:
                    event["device_id"] = self.served.device.device_id
            return json.dumps(doc).encode("utf-8")
        return body


def _ctype(headers: Any) -> str:
    return str(headers.get("Content-Type") or "application/json")


@pytest.fixture(scope="module")
def signing_session(served_api: ServedApi) -> requests.Session:
    served_api.app.services.registry.invalidate()
    session = requests.Session()
    session.auth = SignAs(served_api)
    return session


@SCHEMA.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)
def test_api_conforms_to_its_openapi_document(
    case: Any, served_api: ServedApi, signing_session: requests.Session
) -> None:
    case.call_and_validate(base_url=served_api.url, session=signing_session, checks=CHECKS, timeout=30)
