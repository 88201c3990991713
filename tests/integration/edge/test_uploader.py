"""The uploader against the real test receiver: results, quarantine, clock skew, back pressure, batching."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from anfang.contracts import ErrorCode, EventError, new_event_id, validate_event
from anfang.contracts.examples import example_events
from anfang_edge.spool import Spool, item_from_event
from anfang_edge.uploader import Uploader, UploaderSettings

from .receiver import EdgeReceiver, Scripted
from .support import KeyPair


def _event(n: int, *, event_type: str = "alarm", source_ref: str | None = None) -> dict[str, Any]:
    event = example_events()[event_type]
    event["event_id"] = new_event_id(1_764_000_000_000 + n)
    event["captured_at"] = f"2026-11-29T08:00:{n % 60:02d}.{n:03d}+08:00"
    event["source_ref"] = source_ref or f"n-{n}"
    return event


def _spool(tmp_path: Path, count: int, **kwargs: Any) -> Spool:
    spool = Spool(tmp_path / "spool.sqlite3")
    spool.put_many([item_from_event(validate_event(_event(i, **kwargs))) for i in range(count)])
    return spool


def _uploader(spool: Spool, key: KeyPair, receiver: EdgeReceiver, clock: Any = time.time, **settings: Any) -> Uploader:
    defaults: dict[str, Any] = {"linger_ms": 0, "retry_initial_ms": 10, "retry_max_secs": 0.2}
    return Uploader(
        spool,
        UploaderSettings(api_url=receiver.url, key_id=key.key_id, **{**defaults, **settings}),
        key.private_key,
        clock=clock,
        rng=random.Random(7),
    )


def _drain(uploader: Uploader, rounds: int = 50) -> None:
    for _ in range(rounds):
        if uploader.spool.depth() == 0:
            return
        outcome = uploader.drain_once()
        if outcome is not None and outcome.delay:
            time.sleep(outcome.delay)


def test_given_accepted_and_rejected_events_when_sent_then_rejected_are_quarantined_with_reason(
    tmp_path: Path, key: KeyPair
) -> None:
    # GIVEN an API that rejects events whose source_ref starts with "bad"
    def reject(obj: dict[str, Any]) -> EventError | None:
        if str(obj.get("source_ref", "")).startswith("bad"):
            return EventError(code=ErrorCode.FORBIDDEN_DEVICE, detail="key may not send for this device")
        return None

    with EdgeReceiver([key.private_key.public_key()], reject=reject) as receiver:
        spool = _spool(tmp_path, 5)
        spool.put_many([item_from_event(validate_event(_event(100 + i, source_ref=f"bad-{i}"))) for i in range(2)])
        uploader = _uploader(spool, key, receiver)
        # WHEN the batch is sent
        outcome = uploader.drain_once()
    # THEN good events left the spool, rejected ones sit in quarantine with the API's code and detail
    assert outcome is not None and (outcome.sent, outcome.rejected, outcome.kept) == (5, 2, 0)
    assert spool.depth() == 0
    quarantined = spool.quarantined()
    assert len(quarantined) == 2
    assert {q.code for q in quarantined} == {"forbidden_device"}
    assert all("may not send" in q.reason for q in quarantined)
    # AND they are never retried by themselves: the next round has nothing to send
    assert uploader.drain_once() is None
    assert spool.stats().counters["rejected"] == 2


def test_given_duplicates_at_the_api_when_sent_then_they_leave_the_spool(
    tmp_path: Path, key: KeyPair, receiver: EdgeReceiver
) -> None:
    spool = _spool(tmp_path, 3)
    for pending in spool.pending():
        receiver.accept(json.loads(pending.body))  # the API already has them
    outcome = _uploader(spool, key, receiver).drain_once()
    assert outcome is not None and outcome.duplicate == 3
    assert spool.depth() == 0
    assert spool.stats().counters["duplicate_at_api"] == 3


@pytest.mark.parametrize("skew_secs", [-600, 600])
def test_given_clock_ten_minutes_off_when_sending_then_offset_is_corrected_and_events_delivered(
    tmp_path: Path, key: KeyPair, receiver: EdgeReceiver, skew_secs: int
) -> None:
    # GIVEN a gateway whose clock is 10 minutes off
    spool = _spool(tmp_path, 4)
    uploader = _uploader(spool, key, receiver, clock=lambda: time.time() + skew_secs)
    # WHEN it sends
    outcome = uploader.drain_once()
    # THEN the API answered 401 signature_expired once, the Date header fixed the offset, and the retry landed
    assert outcome is not None and outcome.sent == 4
    assert receiver.auth_failures["signature_expired"] == 1
    assert abs(uploader.clock_offset_secs + skew_secs) < 3
    assert spool.depth() == 0
    # AND later requests are signed with the corrected clock straight away
    spool.put_many([item_from_event(validate_event(_event(50)))])
    assert uploader.drain_once() is not None
    assert receiver.auth_failures["signature_expired"] == 1


def test_given_503_with_retry_after_when_sending_then_waits_that_long_and_retries(
    tmp_path: Path, key: KeyPair, receiver: EdgeReceiver
) -> None:
    spool = _spool(tmp_path, 3)
    receiver.script.append(Scripted(503, ErrorCode.RETRY_LATER, retry_after="2"))
    receiver.script.append(Scripted(429, ErrorCode.RATE_LIMITED, retry_after="1"))
    uploader = _uploader(spool, key, receiver, retry_max_secs=30)
    first = uploader.drain_once()
    second = uploader.drain_once()
    third = uploader.drain_once()
    assert first is not None and (first.status, first.delay, first.kept) == (503, 2.0, 3)
    assert second is not None and (second.status, second.delay) == (429, 1.0)
    assert third is not None and third.sent == 3
    assert [p.attempts for p in spool.pending()] == []
    assert spool.stats().meta["last_error"].startswith("http 429")


def test_given_payload_too_large_when_sending_then_batch_is_split(
    tmp_path: Path, key: KeyPair, receiver: EdgeReceiver
) -> None:
    spool = _spool(tmp_path, 8)
    receiver.script.append(Scripted(413, ErrorCode.PAYLOAD_TOO_LARGE))
    uploader = _uploader(spool, key, receiver)
    first = uploader.drain_once()
    assert first is not None and first.status == 413
    _drain(uploader)
    assert spool.depth() == 0
    assert len(receiver.accepted) == 8
    assert spool.quarantined() == []


def test_given_one_event_the_api_refuses_as_a_whole_request_then_it_is_quarantined(
    tmp_path: Path, key: KeyPair, receiver: EdgeReceiver
) -> None:
    spool = _spool(tmp_path, 1)
    receiver.script.append(Scripted(422, ErrorCode.PAYLOAD_INVALID))
    uploader = _uploader(spool, key, receiver)
    uploader.drain_once()
    assert spool.depth() == 0
    assert [q.code for q in spool.quarantined()] == ["payload_invalid"]


def test_batches_close_on_count_and_wait_for_linger(tmp_path: Path, key: KeyPair, receiver: EdgeReceiver) -> None:
    # count: 250 events with batch_max_events 100 go in 100 + 100 + 50
    spool = _spool(tmp_path, 250)
    uploader = _uploader(spool, key, receiver, batch_max_events=100, linger_ms=0)
    sizes = []
    while spool.depth():
        outcome = uploader.drain_once()
        assert outcome is not None
        sizes.append(outcome.sent)
    assert sizes == [100, 100, 50]

    # linger: a lone fresh event waits linger_ms for company before it is sent
    spool.put_many([item_from_event(validate_event(_event(900)))])
    lingering = _uploader(spool, key, receiver, batch_max_events=100, linger_ms=300)
    started = time.monotonic()
    outcome = lingering.drain_once()
    assert outcome is not None and outcome.sent == 1
    assert time.monotonic() - started >= 0.25


def test_given_undeliverable_events_past_retention_then_they_are_quarantined(
    tmp_path: Path, key: KeyPair, receiver: EdgeReceiver
) -> None:
    spool = _spool(tmp_path, 2)
    uploader = _uploader(spool, key, receiver, clock=lambda: time.time() + 3 * 3600, retention_hours=1.0)
    uploader.clock_offset_secs = -3 * 3600  # keep signatures valid; only retention sees the future
    assert uploader.drain_once() is None
    assert [q.code for q in spool.quarantined()] == ["retention_expired"] * 2
    assert spool.stats().counters["expired"] == 2


def test_given_the_server_dropped_an_idle_keep_alive_connection_then_the_send_reconnects_at_once(
    tmp_path: Path, key: KeyPair, receiver: EdgeReceiver
) -> None:
    spool = _spool(tmp_path, 2)
    uploader = _uploader(spool, key, receiver)
    first = uploader.send(spool.next_batch(max_events=1, max_bytes=1 << 20))
    assert first.sent == 1
    # the API restarts between requests (a load balancer's idle timeout looks the same to the client)
    receiver.stop()
    receiver.start()
    second = uploader.send(spool.next_batch(max_events=1, max_bytes=1 << 20))
    assert (second.sent, second.error) == (1, None)
    assert spool.depth() == 0
