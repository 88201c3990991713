"""Contracts of the ingest API: the Chalice routes are the route table, and openapi.json is generated from it."""

from __future__ import annotations

import ast
import json

from anfang_ops.openapi import ROUTES, openapi
from anfang_ops.schemas import generate
from tests.api_stack import APP_DIR, ROOT


def _app_routes() -> set[tuple[str, str]]:
    # Read the decorators statically: importing the app needs its AWS environment.
    tree = ast.parse((APP_DIR / "app.py").read_text(encoding="utf-8"))
    found: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "route":
                    path = ast.literal_eval(decorator.args[0])
                    methods = next(ast.literal_eval(k.value) for k in decorator.keywords if k.arg == "methods")
                    found.update((method, path) for method in methods)
    return found


def test_chalice_routes_are_exactly_the_route_table() -> None:
    assert _app_routes() == {(route.method, route.path) for route in ROUTES}


def test_openapi_document_is_committed_and_current() -> None:
    committed = (ROOT / "schemas" / "openapi.json").read_text(encoding="utf-8")
    assert committed == generate()["openapi.json"], "run `make schemas`"


def test_openapi_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate

    validate(json.loads(json.dumps(openapi())))


def test_every_error_status_of_a_route_is_documented() -> None:
    document = openapi()
    for route in ROUTES:
        responses = document["paths"][route.path][route.method.lower()]["responses"]
        for code in route.errors:
            assert str(code.http_status) in responses, (route.path, code)
