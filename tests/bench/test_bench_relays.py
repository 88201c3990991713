"""Relay benchmarks (make bench): records/s per core of each relay with images, and its memory.

The upstream runs in a subprocess (the edge agent's GA/T 1400 receiver for the GA/T relay; a plain HTTP server
answering 202 for the HTTPS relay), so the CPU time of this process is the relay's own: outbox reads and acks
(fsync), image fetch and sha256 check (from memory: AWS calls are counted, not timed, as DESIGN 6 says for
moto), base64, JSON, signing and HTTP. Records/s per core = records / CPU seconds of this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anfang.contracts import Signer, generate_private_key, key_id_for
from anfang_ops.relays import Gat1400Relay, Gat1400RelayConfig, HttpsRelay, HttpsRelayConfig, Outbox, OutboxEntry
from anfang_ops.relays.images import check_digest
from tests.relays_support import RELAY_ID, RELAY_PASSWORD, RELAY_USER, sample_records

RECORDS = 300


class MemoryImages:
    """The S3 objects in memory; counts the GetObject calls the relay would make."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.calls = 0

    def fetch(self, ref: str, *, sha256: str) -> bytes:
        self.calls += 1
        return check_digest(self.blobs[ref.split("/", 3)[3]], sha256, ref)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    def __init__(self) -> None:
        self.base = _rss_kib()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_kib())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.base


def _subprocess(script: str) -> Iterator[int]:
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    yield port
    process.terminate()
    process.wait(10)


@pytest.fixture
def library_port(tmp_path: Path) -> Iterator[int]:
    devices = sorted({r["device_id"] for r, _, _ in sample_records()})
    yield from _subprocess(
        textwrap.dedent(
            f"""
            import threading, time
            from pathlib import Path
            from anfang_edge.spool import Spool
            from tests.relays_support import start_library
            running = start_library(0, Spool(Path({str(tmp_path / "lib.sqlite3")!r}), max_bytes=1 << 30), {devices!r})
            time.sleep(0.5)
            print(running.library.port, flush=True)
            threading.Event().wait()
            """
        )
    )


@pytest.fixture
def platform_port() -> Iterator[int]:
    yield from _subprocess(
        textwrap.dedent(
            """
            from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
            class H(BaseHTTPRequestHandler):
                def log_message(self, *a): pass
                def do_POST(self):
                    self.rfile.read(int(self.headers["Content-Length"]))
                    self.send_response(202); self.send_header("Content-Length", "0"); self.end_headers()
            server = ThreadingHTTPServer(("127.0.0.1", 0), H)
            print(server.server_address[1], flush=True)
            server.serve_forever()
            """
        )
    )


def _entries() -> tuple[list[OutboxEntry], dict[str, bytes]]:
    """RECORDS face and plate records (the published samples with fixture JPEGs), each with its own event id."""
    samples = list(sample_records())
    entries, blobs = [], {}
    for n in range(RECORDS):
        record, record_blobs, _ = samples[n % len(samples)]
        record = {**record, "event_id": f"{record['event_id'][:-12]}{n:012d}"}
        blobs.update(record_blobs)
        body = json.dumps(record, ensure_ascii=False).encode()
        entries.append(OutboxEntry(record["device_id"], record["event_id"], record["event_type"], body))
    return entries, blobs


def _drain(relay: Gat1400Relay | HttpsRelay) -> None:
    stop = threading.Event()
    while relay.outbox.stats().pending:
        relay.step(stop, idle_wait_secs=0.01)


def _measure(benchmark: Any, build: Any, entries: list[OutboxEntry]) -> None:
    cpu: list[float] = []
    rss: list[int] = []
    runs = iter(range(100))

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        relay = build(next(runs))
        relay.outbox.put_many(entries)
        return (relay,), {}

    def deliver(relay: Any) -> None:
        sampler = RssSampler()
        start = time.process_time()
        _drain(relay)
        cpu.append(time.process_time() - start)
        rss.append(sampler.stop())
        relay.close()
        relay.outbox.close()

    benchmark.pedantic(deliver, setup=setup, rounds=3, iterations=1)
    per_core = RECORDS / min(cpu)
    benchmark.extra_info.update(
        {
            "records": RECORDS,
            "records_per_sec_wall": round(RECORDS / benchmark.stats.stats.min),
            "records_per_cpu_sec": round(per_core),
            "rss_growth_mib_max": round(max(rss) / 1024, 1),
            "rss_mib": round(_rss_kib() / 1024, 1),
        }
    )
    print(f"\n{benchmark.name}: {per_core:.0f} records/s per core, RSS growth {max(rss) / 1024:.1f} MiB")


def test_bench_gat1400_relay_records_per_core(tmp_path: Path, benchmark: Any, library_port: int) -> None:
    entries, blobs = _entries()
    images = MemoryImages(dict(blobs))

    def build(n: int) -> Gat1400Relay:
        config = Gat1400RelayConfig.model_validate(
            {
                "state_dir": str(tmp_path / f"relay-{n}"),
                "queue": {"url": "unused"},
                "upstream": {
                    "url": f"http://127.0.0.1:{library_port}",
                    "device_id": RELAY_ID,
                    "username": RELAY_USER,
                    "password": RELAY_PASSWORD,
                    "batch_max_records": 50,
                },
            }
        )
        return Gat1400Relay(config, outbox=Outbox(config.outbox_path), reader=None, images=images)

    _measure(benchmark, build, entries)
    benchmark.extra_info["image_fetches_per_record"] = round(images.calls / (RECORDS * 3), 2)


def test_bench_https_relay_records_per_core(tmp_path: Path, benchmark: Any, platform_port: int) -> None:
    entries, _ = _entries()  # the records carry their image references; the HTTPS relay forwards them as they are
    key = generate_private_key()

    def build(n: int) -> HttpsRelay:
        config = HttpsRelayConfig.model_validate(
            {
                "state_dir": str(tmp_path / f"relay-{n}"),
                "queue": {"url": "unused"},
                "upstream": {
                    "url": f"http://127.0.0.1:{platform_port}/records",
                    "key_id": key_id_for(key.public_key()),
                    "private_key_file": "unused",
                    "batch_max_records": 100,
                },
            }
        )
        return HttpsRelay(
            config, outbox=Outbox(config.outbox_path), reader=None, signer=Signer(config.upstream.key_id, key)
        )

    _measure(benchmark, build, entries)
