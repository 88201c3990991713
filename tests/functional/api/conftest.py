"""Functional fixtures: moto in-process (``mock_aws``), the resources of one stack, the Chalice app cold-started."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from anfang.aws.registry import DeviceRegistry
from tests.api_stack import APP_DIR, REGION, Device, Stack, create_stack, load_app, register_device, register_partner


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


@pytest.fixture
def stack(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Stack:
    created = create_stack(aws)
    for name, value in created.env().items():
        monkeypatch.setenv(name, value)
    return created


@pytest.fixture
def app_module(stack: Stack) -> Iterator[ModuleType]:
    yield load_app()
    gc.unfreeze()  # the app freezes the heap after its cold start; a test process has many cold starts


@pytest.fixture
def client(app_module: ModuleType) -> Iterator[Client]:
    with Client(app_module.app, stage_name="test", project_dir=str(APP_DIR)) as test_client:
        yield test_client


@pytest.fixture
def registry(app_module: ModuleType) -> DeviceRegistry:
    return app_module.services.registry  # type: ignore[no-any-return]


@pytest.fixture
def device(registry: DeviceRegistry) -> Device:
    return register_device(registry)


@pytest.fixture
def partner(registry: DeviceRegistry) -> Device:
    return register_partner(registry)
