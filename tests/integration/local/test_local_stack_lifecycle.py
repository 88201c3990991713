"""Starting and stopping the local stack leaves no thread, port or file behind, and twice in a row works."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import requests

from anfang_ops.local import LocalStack
from anfang_ops.towns import load_towns

ROOT = Path(__file__).resolve().parents[3]
TOWN = next(t for t in load_towns(ROOT / "infra" / "towns") if t.env == "gaoqing-tianzhen")

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("round_", [1, 2])
def test_stopping_leaves_no_thread_or_port_behind(round_: int, tmp_path: Path) -> None:
    before = {t.name for t in threading.enumerate()}
    local = LocalStack(ROOT, tmp_path / "local", town=TOWN)
    info = local.start()
    ports = [int(info.api_url.rsplit(":", 1)[1]), int(info.aws_endpoint_url.rsplit(":", 1)[1])]
    assert requests.get(info.api_url + "/v1/health", timeout=10).status_code == 200
    local.stop()
    assert not local.stack_json.exists()
    for port in ports:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    leftover = {t.name for t in threading.enumerate() if t.is_alive()} - before
    assert not {name for name in leftover if name.startswith(("sqs-", "s3-", "api"))}, leftover
