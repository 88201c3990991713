"""Integration fixtures: a moto server on 127.0.0.1 and the API served over real HTTP on 127.0.0.1.

Nothing is mocked in-process: the API's boto3 clients reach moto through ``AWS_ENDPOINT_URL`` and the tests
talk to the API with ``requests``, as an edge agent would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest
from chalice.config import Config
from chalice.local import LocalDevServer
from moto.server import ThreadedMotoServer

from anfang.aws.registry import DeviceRegistry
from tests.api_stack import REGION, Device, Stack, create_stack, load_app, register_device, register_partner


@dataclass
class ServedApi:
    url: str
    endpoint: str
    session: Any
    stack: Stack
    app: ModuleType
    device: Device
    partner: Device

    @property
    def registry(self) -> DeviceRegistry:
        return self.app.services.registry  # type: ignore[no-any-return]


@pytest.fixture(scope="package")
def served_api() -> Iterator[ServedApi]:
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint,
        }.items():
            env.setenv(name, value)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        session = boto3.session.Session(region_name=REGION)
        stack = create_stack(session, prefix="anfang-it")
        for name, value in stack.env().items():
            env.setenv(name, value)
        env.setenv("REGISTRY_CACHE_TTL_SECS", "5")
        app = load_app("anfang_api_app_served")
        server = LocalDevServer(app.app, Config.create(), "127.0.0.1", 0)
        thread = threading.Thread(target=server.server.serve_forever, daemon=True)
        thread.start()
        api_port = server.server.server_address[1]
        try:
            yield ServedApi(
                url=f"http://127.0.0.1:{api_port}",
                endpoint=endpoint,
                session=session,
                stack=stack,
                app=app,
                device=register_device(app.services.registry),
                partner=register_partner(app.services.registry),
            )
        finally:
            server.shutdown()
            server.server.server_close()
            moto.stop()
