"""One bad event never stalls a site: a forbidden device among 1,000 valid events, against both API contracts.

Before issue 14 the API refused a whole request with 403 ``forbidden_device`` if any event named a device the
key is not bound to; the spool always sends oldest first, so that event stayed at the head and everything
behind it waited for ``retention_hours``. Now the uploader splits such a batch at once until the culprit is
alone and quarantines it, and the API answers per event (``rejected``/``forbidden_device``). Either way: 999
delivered, 1 quarantined, within one retry cycle (no backoff delay on the way). And the edge refuses such an
event at spool time when its config says which devices its key is bound to.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from anfang.contracts import new_event_id, validate_event
from anfang.contracts.examples import example_events
from anfang_edge.spool import Spool, item_from_event
from anfang_edge.uploader import Uploader, UploaderSettings

from .receiver import EdgeReceiver
from .support import EXAMPLE_DEVICE, KeyPair

FORBIDDEN = "33010600001320000666"


def _spool_1000_with_one_forbidden(path: Path, position: int) -> tuple[Spool, str]:
    spool = Spool(path)
    items = []
    forbidden_id = ""
    for n in range(1000):
        event = example_events()["alarm"]
        event["event_id"] = new_event_id(1_764_000_000_000 + n)
        event["captured_at"] = f"2026-11-29T08:{n // 60 % 60:02d}:{n % 60:02d}+08:00"
        if n == position:
            event["device_id"] = FORBIDDEN
            forbidden_id = event["event_id"]
        items.append(item_from_event(validate_event(event)))
    spool.put_many(items)
    return spool, forbidden_id


@pytest.mark.parametrize("mode", ["request", "event"])
@pytest.mark.parametrize("position", [0, 537, 999])
def test_given_one_forbidden_event_among_1000_then_999_are_delivered_and_1_quarantined_in_one_retry_cycle(
    tmp_path: Path, key: KeyPair, mode: str, position: int
) -> None:
    # GIVEN an API that binds the key to the example device only, and a spool holding 1,000 events, one of
    # them (first, in the middle or last in capture order) for another device
    spool, forbidden_id = _spool_1000_with_one_forbidden(tmp_path / "spool.sqlite3", position)
    with EdgeReceiver([key.private_key.public_key()], device_ids={EXAMPLE_DEVICE}, forbidden_mode=mode) as receiver:
        uploader = Uploader(
            spool,
            UploaderSettings(api_url=receiver.url, key_id=key.key_id, linger_ms=0, batch_max_events=100),
            key.private_key,
            rng=random.Random(1),
        )
        # WHEN the uploader drains, never waiting between requests
        delays = []
        started = time.monotonic()
        for _ in range(100):
            if spool.depth() == 0:
                break
            outcome = uploader.drain_once()
            assert outcome is not None
            delays.append(outcome.delay)
        uploader.close()
        elapsed = time.monotonic() - started
    # THEN 999 delivered, the forbidden one quarantined with its code, and no backoff was ever needed
    assert spool.depth() == 0
    assert len(receiver.accepted) == 999 and forbidden_id not in receiver.accepted
    [quarantined] = spool.quarantined()
    assert (quarantined.event_id, quarantined.code) == (forbidden_id, "forbidden_device")
    assert set(delays) == {0.0}, "a backoff delay: the bad event held its neighbours back"
    requests = receiver.requests
    spool.close()
    # a whole-request 403 costs a few split requests (about log2 of the batch); per-event answers cost none
    assert requests <= (10 if mode == "event" else 30), requests
    print(f"\n1 forbidden among 1000 at {position} ({mode} contract): {requests} requests, {elapsed:.2f} s")


def test_given_the_key_bindings_then_the_spool_refuses_an_event_for_another_device_at_put_time(tmp_path: Path) -> None:
    # GIVEN a spool told which devices the key is bound to
    spool = Spool(tmp_path / "spool.sqlite3", allowed_devices=frozenset({EXAMPLE_DEVICE}))
    good = example_events()["alarm"]
    bad = {**example_events()["alarm"], "event_id": new_event_id(), "device_id": FORBIDDEN}
    # WHEN a source puts both
    result = spool.put_many([item_from_event(validate_event(good)), item_from_event(validate_event(bad))])
    # THEN only the permitted one is spooled; the other is reported forbidden and counted, never queued
    assert (result.spooled, result.forbidden) == ([good["event_id"]], [bad["event_id"]])
    assert [p.event_id for p in spool.pending()] == [good["event_id"]]
    assert spool.stats().counters["refused_forbidden_device"] == 1
    spool.close()
