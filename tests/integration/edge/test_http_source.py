"""The http source: devices on the LAN push signed v1 events; results per event, acknowledged after the commit."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anfang.contracts import BatchResponse, new_event_id
from anfang.contracts.examples import example_events
from anfang_edge.config import HttpDeviceConfig, HttpSourceConfig
from anfang_edge.sources.http import HttpSource
from anfang_edge.spool import Spool

from .support import DEVICE_SECRET, EXAMPLE_DEVICE, signed_headers

DEVICES = {EXAMPLE_DEVICE: HttpDeviceConfig(secret=DEVICE_SECRET)}


@pytest.fixture
def source(tmp_path: Path) -> Iterator[HttpSource]:
    spool = Spool(tmp_path / "spool.sqlite3", max_bytes=1 << 20)
    src = HttpSource(HttpSourceConfig(type="http", listen_port=0, block_timeout_secs=0.2, devices=DEVICES), spool)
    stop = threading.Event()
    thread = threading.Thread(target=src.run, args=(stop,))
    thread.start()
    yield src
    stop.set()
    thread.join(5)
    spool.close()


def _post(port: int, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/v1/events", body=body, headers=signed_headers(body))
    response = conn.getresponse()
    data = json.loads(response.read())
    headers = {k.lower(): v for k, v in response.getheaders()}
    conn.close()
    return response.status, data, headers


def test_given_a_mixed_batch_when_pushed_then_each_event_gets_its_result_after_the_commit(source: HttpSource) -> None:
    # GIVEN every example event, one invalid event, and one repeated event
    events = list(example_events().values())
    bad = {**example_events()["alarm"], "event_id": new_event_id(), "alarm": {"kind": "ufo"}}
    body = json.dumps({"events": [*events, bad, events[0]]}).encode()
    # WHEN pushed
    status, data, _ = _post(source.port, body)
    # THEN 202 with results in request order
    assert status == 202
    response = BatchResponse.model_validate(data)
    assert [r.status for r in response.results] == ["accepted"] * 6 + ["rejected", "duplicate"]
    assert response.results[6].error is not None and response.results[6].error.field == "alarm.kind"
    assert source.spool.depth() == 6
    # AND pushing again is idempotent
    status, data, _ = _post(source.port, body)
    assert BatchResponse.model_validate(data).duplicate == 7


def test_bad_requests_are_problems_with_codes(source: HttpSource) -> None:
    status, data, headers = _post(source.port, b"{not json")
    assert (status, data["code"]) == (400, "malformed_json")
    assert headers["content-type"] == "application/problem+json"
    status, data, _ = _post(source.port, b'{"events": []}')
    assert (status, data["code"]) == (422, "payload_invalid")


def test_given_a_full_spool_with_block_then_the_device_is_told_to_retry_later(tmp_path: Path) -> None:
    # GIVEN a spool with room for about two face captures and nothing draining it
    one = {**example_events()["face_capture"], "event_id": new_event_id()}
    spool = Spool(tmp_path / "small.sqlite3", max_bytes=int(len(json.dumps(one)) * 2.5), when_full="block")
    src = HttpSource(HttpSourceConfig(type="http", listen_port=0, block_timeout_secs=0.2, devices=DEVICES), spool)
    stop = threading.Event()
    thread = threading.Thread(target=src.run, args=(stop,))
    thread.start()
    try:
        results = []
        for _ in range(4):
            event = {**one, "event_id": new_event_id()}
            results.append(_post(src.port, json.dumps({"events": [event]}).encode()))
    finally:
        stop.set()
        thread.join(5)
    # THEN the first two are accepted, then the device is told to come back (nothing dropped, nothing lost)
    assert [status for status, _, _ in results] == [202, 202, 503, 503]
    _, problem, headers = results[2]
    assert problem["code"] == "retry_later"
    assert headers["retry-after"] == "5"
    assert spool.depth() == 2
    spool.close()
