"""Helpers for edge agent tests: keys on disk, TOML configs, the agent as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anfang.contracts import generate_private_key, key_id_for, private_key_to_pem
from anfang_edge.config import default_fixtures_dir
from anfang_edge.sources.http import DEVICE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_request

FIXTURES = default_fixtures_dir()
#: The device of ``anfang.contracts.examples`` and the HMAC secret the http source tests give it.
EXAMPLE_DEVICE = "33010600001320000001"
DEVICE_SECRET = "a-device-secret-of-at-least-32-characters"


def signed_headers(
    body: bytes, device_id: str = EXAMPLE_DEVICE, secret: str = DEVICE_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """What a device sends to the http source: JSON content type and its HMAC headers."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        DEVICE_HEADER: device_id,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign_request(secret.encode(), "POST", "/v1/events", device_id, ts, body),
    }


@dataclass
class KeyPair:
    private_key: Ed25519PrivateKey
    key_id: str
    path: Path


def make_key(directory: Path) -> KeyPair:
    key = generate_private_key()
    path = directory / "agent.key"
    path.write_bytes(private_key_to_pem(key))
    path.chmod(0o600)
    return KeyPair(key, key_id_for(key.public_key()), path)


def write_config(directory: Path, key: KeyPair, api_url: str, **overrides: Any) -> Path:
    """Write ``agent.toml`` with fast test timings; ``overrides`` replace top-level keys."""
    doc: dict[str, Any] = {
        "api_url": api_url,
        "key_id": key.key_id,
        "private_key_file": str(key.path),
        "state_dir": str(directory / "state"),
        "linger_ms": 20,
        "retry_initial_ms": 50,
        "retry_max_secs": 0.5,
        "request_timeout_secs": 5.0,
        "watchdog": False,
        "sources": [],
    }
    doc.update(overrides)
    path = directory / "agent.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def start_agent(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``anfang-edge run --config`` as a real process, logging to ``log``."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "anfang_edge.cli", "run", "--config", str(config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )


def stop_agent(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
