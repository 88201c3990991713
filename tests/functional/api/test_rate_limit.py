"""The per-key request budget (``anfang.api.rate_limit``) through the ingest API in moto.

What it must guarantee: a flood of unsigned or forged requests is refused before any budget is looked at, so
it cannot spend a signed device's budget; a noisy device runs out of its own budget only; past it, 429
``rate_limited`` with ``Retry-After``, and the next window opens again.
"""

from __future__ import annotations

import base64
import gc
import json
from collections import Counter
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from chalice.test import Client

from anfang.api.rate_limit import COUNTER_PREFIX, KeyRateLimiter, RateLimitedError
from anfang.aws.registry import DeviceRegistry
from anfang.contracts import MemoryNonceStore
from tests.api_stack import (
    APP_DIR,
    OTHER_DEVICE_ID,
    Device,
    Stack,
    alarm_event,
    batch,
    load_app,
    register_device,
    signed,
)
from tests.iam.recorder import Recorder

BUDGET = 3


@pytest.fixture
def limited_app(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("KEY_RATE_LIMIT_REQUESTS", str(BUDGET))
    monkeypatch.setenv("KEY_RATE_WINDOW_SECS", "3600")  # one window for the whole test, whatever the clock
    yield load_app("anfang_api_app_limited")
    gc.unfreeze()


@pytest.fixture
def limited(limited_app: ModuleType) -> Iterator[Client]:
    with Client(limited_app.app, stage_name="test", project_dir=str(APP_DIR)) as client:
        yield client


def post(client: Client, body: bytes, headers: dict[str, str]) -> Any:
    return client.http.post("/v1/events", headers=headers, body=body)


def signed_post(client: Client, device: Device) -> Any:
    body = batch(alarm_event(device.device_id))
    return post(client, body, signed(device.signer, "POST", "/v1/events", body))


def forged(device: Device, body: bytes) -> dict[str, str]:
    """Headers naming the device's real key id, with a signature made by someone else's key."""
    headers = signed(device.signer, "POST", "/v1/events", body)
    raw = bytearray(base64.b64decode(headers["Signature"].split(":")[1]))
    raw[0] ^= 0xFF
    headers["Signature"] = "sig1=:" + base64.b64encode(bytes(raw)).decode() + ":"
    return headers


def test_an_unsigned_and_forged_flood_does_not_spend_a_signed_devices_budget(
    limited: Client, limited_app: ModuleType, stack: Stack, aws: Any
) -> None:
    registry: DeviceRegistry = limited_app.services.registry
    device = register_device(registry)
    # GIVEN a flood of 40 unsigned requests and 40 forged ones that name the device's real key id
    body = batch(alarm_event(device.device_id))
    plain = {"Content-Type": "application/json"}
    flood = [post(limited, body, plain) for _ in range(40)] + [
        post(limited, body, forged(device, body)) for _ in range(40)
    ]
    # THEN every one is refused by the verifier, and none reached the budget's counter
    assert Counter(r.status_code for r in flood) == {401: 80}
    assert Counter(json.loads(r.body)["code"] for r in flood) == {"signature_missing": 40, "signature_invalid": 40}
    items = aws.client("dynamodb").scan(TableName=stack.names["nonces"])["Items"]
    assert not [i for i in items if i["pk"]["S"].startswith(COUNTER_PREFIX)]
    # WHEN the device then sends, its whole budget is there
    answers = [signed_post(limited, device) for _ in range(BUDGET)]
    assert [r.status_code for r in answers] == [202] * BUDGET, answers[-1].body
    # AND one more is rate limited, as problem+json with Retry-After
    over = signed_post(limited, device)
    assert over.status_code == 429, over.body
    assert over.headers["Content-Type"] == "application/problem+json"
    assert json.loads(over.body)["code"] == "rate_limited"
    assert 1 <= int(over.headers["Retry-After"]) <= 3600


def test_a_noisy_device_spends_only_its_own_budget_and_is_then_refused_without_aws_calls(
    limited: Client, limited_app: ModuleType, iam_recorder: Recorder
) -> None:
    registry: DeviceRegistry = limited_app.services.registry
    noisy, quiet = register_device(registry), register_device(registry, OTHER_DEVICE_ID)
    # GIVEN a device that sends twice its budget
    noisy_codes = [signed_post(limited, noisy).status_code for _ in range(2 * BUDGET)]
    assert noisy_codes == [202] * BUDGET + [429] * BUDGET
    # THEN another device's requests are all accepted
    assert [signed_post(limited, quiet).status_code for _ in range(BUDGET)] == [202] * BUDGET
    # AND once blocked, the noisy device's next request costs the API no AWS call but the key lookup (the
    # session's call recorder sees every call the API function makes)
    before = len(iam_recorder.calls)
    assert signed_post(limited, noisy).status_code == 429
    made = Counter(f"{c.service}.{c.operation}" for c in iam_recorder.calls[before:] if c.function == "ApiFunction")
    assert made == {"dynamodb.GetItem": 1}, made


def test_the_budget_opens_again_in_the_next_window_and_replays_are_not_counted(stack: Stack, aws: Any) -> None:
    now = [1_000.0]
    ddb = aws.client("dynamodb")
    nonces = MemoryNonceStore(clock=lambda: now[0])
    limiter = KeyRateLimiter(nonces, ddb, stack.names["nonces"], limit=2, window_secs=10, clock=lambda: now[0])
    # GIVEN a key that spent its budget of 2; a replayed nonce is refused by the nonce store and not counted
    assert limiter.remember("k1", "n1", 600)
    assert not limiter.remember("k1", "n1", 600)
    assert limiter.remember("k1", "n2", 600)
    with pytest.raises(RateLimitedError) as refused:
        limiter.remember("k1", "n3", 600)
    assert refused.value.retry_after_secs == 10
    # WHEN the window ends, THEN the key has its budget again
    now[0] += 10
    assert limiter.remember("k1", "n4", 600)
    # AND a budget of 0 means none: only the nonce store decides
    unlimited = KeyRateLimiter(nonces, ddb, stack.names["nonces"], limit=0, clock=lambda: now[0])
    assert all(unlimited.remember("k1", f"m{i}", 600) for i in range(10))
