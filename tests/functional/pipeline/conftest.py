"""moto in-process AWS for the pipeline's functional tests (no sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.pipeline_stack import REGION, Stack, create_stack


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def aws(_aws_env: None) -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def kms(aws: None) -> Any:
    return boto3.client("kms", region_name=REGION)


@pytest.fixture
def police_key(kms: Any) -> str:
    return str(kms.create_key(Description="police_video records")["KeyMetadata"]["Arn"])


@pytest.fixture
def stack(aws: None) -> Stack:
    return create_stack()
