"""moto in-process AWS for the pipeline's functional tests (no sockets: tests only talk to 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from anfang.contracts import SiteView
from anfang.redact import ImageBuckets

REGION = "cn-north-1"
BUCKETS = ImageBuckets(raw_bucket="anfang-330106-raw", image_bucket="anfang-330106-images")
SECRETS = {"gov_cloud": b"gov-cloud-pseudonym-secret-0001", "police_video": b"police-video-pseudonym-secret-01"}


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


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


class MemorySites:
    """An in-memory device registry view (the real adapter is the ingest API's ``anfang.registry``)."""

    def __init__(self, sites: dict[str, SiteView]) -> None:
        self.sites = sites
        self.calls = 0

    def sites_of(self, device_ids: Any) -> dict[str, SiteView]:
        self.calls += 1
        return {d: self.sites[d] for d in device_ids if d in self.sites}
