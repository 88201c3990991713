"""template.yaml ↔ functions/: every Handler resolves to a callable from its CodeUri, the Chalice routes are
the template's Api events, and each function's environment is exactly what its settings model reads."""

from __future__ import annotations

import gc
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from anfang.api.settings import ApiSettings
from anfang.aws.environment import FunctionSettings
from anfang_ops import template
from tests.api_stack import REGION, create_stack, load_app

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = template.functions_of(template.load_template(ROOT / "template.yaml"))
# Read by Powertools or by the runtime, not by our settings models.
RUNTIME_VARIABLES = {
    "LOG_LEVEL",
    "POWERTOOLS_LOG_LEVEL",
    "POWERTOOLS_LOGGER_LOG_EVENT",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_SERVICE_NAME",
}


# Read when set, deliberately absent from the template: a town's own policy folder (shipped in a layer of its
# own) and a gov-side KMS key for a town policy that encrypts for gov_cloud (the default policy does not).
OPTIONAL_OVERRIDES = {"POLICY_DIR", "GOV_CLOUD_KMS_KEY_ID"}


def _module(function: template.FunctionSpec) -> ModuleType:
    module_name = function.handler.rpartition(".")[0]
    path = ROOT / function.code_uri / f"{module_name}.py"
    assert path.is_file(), f"{function.name}: {path} does not exist"
    spec = importlib.util.spec_from_file_location(f"contract_{function.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def api_module() -> Iterator[ModuleType]:
    """The API's cold start needs its resources: create them in moto and import ``app.py`` with their names."""
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
            patch.setenv(name, value)
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        stack = create_stack(boto3.session.Session(region_name=REGION))
        for name, value in stack.env().items():
            patch.setenv(name, value)
        yield load_app("contract_api_app")
        gc.unfreeze()


def _handler_of(function: template.FunctionSpec, api_module: ModuleType) -> Any:
    module = api_module if function.name == "ApiFunction" else _module(function)
    return getattr(module, function.handler.rpartition(".")[2])


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_handler_resolves_to_a_callable(name: str, api_module: ModuleType) -> None:
    assert callable(_handler_of(FUNCTIONS[name], api_module))


def test_chalice_routes_are_the_template_api_events(api_module: ModuleType) -> None:
    routes = {(method, path) for path, entries in api_module.app.routes.items() for method in entries}
    events = {
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
        for function in FUNCTIONS.values()
        for event in function.events.values()
        if event["Type"] == "Api"
    }
    assert routes == events


def _settings_model(function: template.FunctionSpec) -> type[FunctionSettings]:
    if function.name == "ApiFunction":
        return ApiSettings
    model = _module(function).Settings
    assert issubclass(model, FunctionSettings)
    return model  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_environment_equals_the_settings_model(name: str) -> None:
    function = FUNCTIONS[name]
    model = _settings_model(function)
    read = model.variables() - RUNTIME_VARIABLES
    read -= OPTIONAL_OVERRIDES
    given = set(function.environment) - RUNTIME_VARIABLES
    assert given == read, f"only in template.yaml: {sorted(given - read)}; only in the model: {sorted(read - given)}"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_literal_tunables_in_the_template_are_the_model_defaults(name: str) -> None:
    # A knob written out in template.yaml shows ops its value; it must be the value the code would use anyway.
    function = FUNCTIONS[name]
    fields = {field.alias: field for field in _settings_model(function).model_fields.values()}
    for variable, value in function.environment.items():
        field = fields.get(variable)
        if variable in RUNTIME_VARIABLES:
            continue
        if isinstance(value, str) and field is not None and not field.is_required():
            default = field.default
            expected = str(default).lower() if isinstance(default, bool) else str(default)
            assert value in (expected, expected.removesuffix(".0")), f"{name}: {variable}={value}, default {default}"
