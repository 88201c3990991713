"""Contracts on the hot path of ingest: per-event validation and request verification."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from anfang.contracts import (
    EVENT_TYPES,
    KeyInfo,
    MemoryNonceStore,
    Signer,
    Verifier,
    generate_private_key,
    key_id_for,
    new_event_id,
    validate_event,
)
from anfang.contracts.examples import example_events


def _batch_without_images(n: int = 100) -> list[dict[str, Any]]:
    examples = example_events()
    events = []
    for i in range(n):
        event = dict(examples[EVENT_TYPES[1 + i % 5]])  # the five types that need no image
        event.pop("images", None)
        event["event_id"] = new_event_id()
        events.append(event)
    return events


@pytest.mark.benchmark(group="contracts")
def test_validate_100_events_without_images(benchmark: BenchmarkFixture) -> None:
    events = _batch_without_images()
    results = benchmark(lambda: [validate_event(e) for e in events])
    assert len(results) == 100
    benchmark.extra_info["events_per_round"] = 100


@pytest.mark.benchmark(group="contracts")
def test_sign_and_verify_a_5_mib_body(benchmark: BenchmarkFixture) -> None:
    private_key = generate_private_key()
    key_id = key_id_for(private_key.public_key())
    info = KeyInfo(key_id=key_id, public_key=private_key.public_key(), role="device")
    body = json.dumps({"events": [], "pad": "x" * (5 * 1024 * 1024 - 40)}).encode()
    signer = Signer(key_id, private_key)

    class Keys:
        def resolve(self, kid: str) -> KeyInfo | None:
            return info if kid == key_id else None

    verifier = Verifier(Keys(), MemoryNonceStore())

    def round_trip() -> int:
        headers = signer.sign("POST", "/v1/events", body)
        return verifier.verify("POST", "/v1/events", headers, body).created

    assert benchmark(round_trip) > 0
    benchmark.extra_info["events_per_round"] = 1
