"""The HTTPS relay over real loopback HTTP and a moto queue, against a county-platform receiver that verifies the
RFC 9421 signatures with the project's own verifier and one public key; 429/503 with Retry-After, a record the
platform refuses, and kill -9 of the relay process are thrown at it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from anfang.contracts import (
    KeyInfo,
    MemoryNonceStore,
    SignatureError,
    Signer,
    Verifier,
    generate_private_key,
    key_id_for,
    new_event_id,
    private_key_to_pem,
)
from anfang_ops.relays import HttpsRelay, HttpsRelayConfig, Outbox, QueueReader, load_https_config

from .conftest import REGION, Aws, wait_for

pytestmark = pytest.mark.slow
PATH = "/anfang/v1/records"


class Platform:
    """The county data platform: verifies every request, keeps records by (device_id, event_id)."""

    def __init__(self, public_key: Any, key_id: str) -> None:
        keys = {key_id: KeyInfo(key_id=key_id, public_key=public_key, role="partner")}
        self.verifier = Verifier(type("Keys", (), {"resolve": lambda _self, k: keys.get(k)})(), MemoryNonceStore())
        self.received: Counter[tuple[str, str]] = Counter()
        self.refuse: set[str] = set()  # event ids answered 422 whenever their batch holds them
        self.script: deque[tuple[int, dict[str, str]]] = deque()  # canned answers for the next requests
        self.requests: list[tuple[float, int, int]] = []  # (time, records, status)
        self.bad_signatures = 0
        self.lock = threading.Lock()
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, headers = platform.answer(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{PATH}"

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        try:
            self.verifier.verify("POST", path, headers, body)
        except SignatureError:
            with self.lock:
                self.bad_signatures += 1
            return 401, {}
        records = json.loads(body)["records"]
        with self.lock:
            if self.script:
                status, extra = self.script.popleft()
                self.requests.append((time.monotonic(), len(records), status))
                return status, extra
            if any(r["event_id"] in self.refuse for r in records):
                self.requests.append((time.monotonic(), len(records), 422))
                return 422, {}
            for record in records:
                self.received[(record["device_id"], record["event_id"])] += 1
            self.requests.append((time.monotonic(), len(records), 202))
        return 202, {}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def key() -> Any:
    return generate_private_key()


@pytest.fixture
def platform(key: Any) -> Iterator[Platform]:
    running = Platform(key.public_key(), key_id_for(key.public_key()))
    yield running
    running.close()


def _gov_records(n: int) -> list[dict[str, Any]]:
    return [
        {
            "schema": "anfang.record.v1",
            "event_id": new_event_id(),
            "event_type": "alarm",
            "town": "330106",
            "device_id": f"33010600001320{i % 3:06d}",
            "site": {"site_id": "xihu-001", "site_type": "residential_closed", "name": "Lakeside Garden"},
            "captured_at": "2026-11-29T08:03:00+08:00",
            "received_at": "2026-11-29T00:30:00Z",
            "alarm": {"kind": "loitering", "severity": "warning", "zone": "pn_Xq3abcdefghijklmnopqrstu"},
            "images": [],
            "redaction": {"policy": "gov_cloud@2"},
        }
        for i in range(n)
    ]


def _write_config(tmp: Path, aws: Aws, queue: str, url: str, key: Any, **upstream: Any) -> Path:
    (tmp / "relay.key").write_bytes(private_key_to_pem(key))
    (tmp / "relay.key").chmod(0o600)
    extra = "".join(f"{name} = {json.dumps(value)}\n" for name, value in upstream.items())
    path = tmp / "https.toml"
    path.write_text(
        f'state_dir = "state"\n\n[queue]\nurl = "{queue}"\nregion = "{REGION}"\nendpoint_url = "{aws.endpoint}"\n'
        "wait_time_secs = 1\n\n[retry]\ninitial_secs = 0.2\nmax_secs = 1.0\n\n"
        f'[upstream]\nurl = "{url}"\nkey_id = "{key_id_for(key.public_key())}"\nprivate_key_file = "relay.key"\n'
        f"{extra}"
    )
    return path


def _run(config: HttpsRelayConfig, aws: Aws, key: Any) -> tuple[HttpsRelay, threading.Event, threading.Thread]:
    outbox = Outbox(config.outbox_path)
    reader = QueueReader(aws.client("sqs"), config.queue.url, wait_time_secs=1)
    relay = HttpsRelay(config, outbox=outbox, reader=reader, signer=Signer(config.upstream.key_id, key))
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    return relay, stop, thread


def test_signed_batches_arrive_once_and_retry_after_is_honoured(
    tmp_path: Path, aws: Aws, platform: Platform, key: Any
) -> None:
    # GIVEN 25 gov_cloud records on the queue and a platform that first answers 429 (Retry-After 2) then 503
    records = _gov_records(25)
    queue = aws.new_queue()
    aws.send_records(queue, records, {})
    platform.script.extend([(429, {"Retry-After": "2"}), (503, {"Retry-After": "1"})])
    config = load_https_config(_write_config(tmp_path, aws, queue, platform.url, key, batch_max_records=10))
    # WHEN the relay runs
    relay, stop, thread = _run(config, aws, key)
    try:
        wait_for(lambda: sum(platform.received.values()) == 25, timeout_secs=30, what="every record")
        wait_for(lambda: relay.outbox.stats().counters.get("sent", 0) == 25, what="acknowledged")
    finally:
        stop.set()
        thread.join(10)
        relay.outbox.close()
    # THEN every signature verified with the one public key, each record arrived once
    assert platform.bad_signatures == 0
    assert set(platform.received) == {(r["device_id"], r["event_id"]) for r in records}
    assert set(platform.received.values()) == {1}
    # AND the relay waited at least Retry-After after the 429 and after the 503
    times = [t for t, _, _ in platform.requests]
    assert times[1] - times[0] >= 2.0 and times[2] - times[1] >= 1.0
    assert [s for _, _, s in platform.requests[:2]] == [429, 503]


def test_a_refused_record_is_isolated_and_its_neighbours_delivered(
    tmp_path: Path, aws: Aws, platform: Platform, key: Any
) -> None:
    # GIVEN a platform that refuses one record (422) and so every batch holding it
    records = _gov_records(8)
    poison = records[5]["event_id"]
    platform.refuse.add(poison)
    queue = aws.new_queue()
    aws.send_records(queue, records, {})
    config = load_https_config(_write_config(tmp_path, aws, queue, platform.url, key, batch_max_records=8))
    relay, stop, thread = _run(config, aws, key)
    try:
        # WHEN the relay has delivered what it can
        wait_for(lambda: sum(platform.received.values()) == 7, what="the seven good records")
        pending = relay.outbox.pending()
    finally:
        stop.set()
        thread.join(10)
        relay.outbox.close()
    # THEN the seven others arrived once; the refused one is kept with its error, never dropped
    assert set(platform.received.values()) == {1} and len(platform.received) == 7
    assert [(p.event_id, p.attempts > 0) for p in pending] == [(poison, True)]
    assert pending[0].last_error is not None and "422" in pending[0].last_error


def test_kill_9_of_the_https_relay_loses_nothing(tmp_path: Path, aws: Aws, platform: Platform, key: Any) -> None:
    # GIVEN records on the queue and a platform that is slow to answer (the kill lands mid-request)
    records = _gov_records(30)
    queue = aws.new_queue()
    aws.send_records(queue, records, {})
    config = _write_config(tmp_path, aws, queue, platform.url, key, batch_max_records=5)
    gate = threading.Event()
    original = platform.answer

    def slow(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        gate.set()
        time.sleep(0.5)
        return original(path, headers, body)

    platform.answer = slow  # type: ignore[method-assign]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    command = [sys.executable, "-m", "anfang_ops.cli", "relay", "https", "--config", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        # WHEN it is killed with SIGKILL while a batch is being answered, then started again
        assert gate.wait(60)
        time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        platform.answer = original  # type: ignore[method-assign]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        # THEN every record arrives; a record is received twice at most (the batch in flight at the kill)
        wait_for(lambda: len(platform.received) == 30, timeout_secs=60, what="every record")
        wait_for(lambda: aws.queue_depth(queue) == 0, what="queue drained")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]
    twice = [k for k, n in platform.received.items() if n > 1]
    assert len(twice) <= 5 and max(platform.received.values()) <= 2
    assert platform.bad_signatures == 0
