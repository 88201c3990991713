"""The spool on real SQLite files: durability settings, order, dedup, bounds, quarantine, counters."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from anfang.contracts import EventBatch
from anfang_edge.errors import SpoolFullError
from anfang_edge.spool import BATCH_OVERHEAD_BYTES, Spool

from .helpers import item


def test_spool_is_wal_with_synchronous_full(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3")
    assert spool._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    spool.close()


def test_put_is_durable_and_visible_to_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with Spool(path) as spool:
        result = spool.put_many([item(1), item(2)])
        assert len(result.spooled) == 2
        # another process's view (what survives if this one is killed now)
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 2


def test_duplicates_by_event_id_are_reported_not_stored_twice(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.sqlite3") as spool:
        first = item(1)
        assert spool.put_many([first]).spooled == [first.event_id]
        again = spool.put_many([first, item(2)])
        assert again.duplicate == [first.event_id]
        assert spool.depth() == 2
        counters = spool.stats().counters
        assert (counters["received"], counters["spooled"], counters["duplicate_received"]) == (3, 2, 1)


def test_batches_come_in_capture_order_bounded_by_count_and_bytes(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.sqlite3") as spool:
        spool.put_many([item(5), item(3), item(4)])  # arrive out of capture order
        spool.put_many([item(1, "device_status"), item(2, "access")])
        batch = spool.next_batch(max_events=3, max_bytes=1 << 20)
        assert [p.captured_ms for p in batch] == sorted(p.captured_ms for p in batch)
        assert len(batch) == 3
        one_size = len(batch[0].body) + 1 + BATCH_OVERHEAD_BYTES
        assert len(spool.next_batch(max_events=10, max_bytes=one_size)) == 1
        # a batch body built from the spool is a valid EventBatch
        body = b'{"events":[' + b",".join(p.body for p in batch) + b"]}"
        assert len(EventBatch.model_validate_json(body).events) == 3


def test_settle_acks_and_quarantines_in_one_step(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.sqlite3") as spool:
        items = [item(i) for i in range(4)]
        spool.put_many(items)
        spool.settle(
            accepted=[items[0].event_id],
            duplicate=[items[1].event_id],
            rejected={items[2].event_id: ("payload_invalid", "alarm.zone: too long")},
        )
        assert [p.event_id for p in spool.pending()] == [items[3].event_id]
        [quarantined] = spool.quarantined()
        assert (quarantined.event_id, quarantined.code) == (items[2].event_id, "payload_invalid")
        stats = spool.stats()
        assert (stats.counters["sent"], stats.counters["duplicate_at_api"], stats.counters["rejected"]) == (1, 1, 1)
        assert stats.meta["last_success_at"]
        # a quarantined event put again is not re-spooled (it would only be rejected again)
        assert spool.put_many([items[2]]).duplicate == [items[2].event_id]
        assert spool.retry_quarantined() == 1
        assert spool.depth() == 2
        assert spool.purge() == 0
        assert spool.purge(outbox=True) == 2


def test_given_full_spool_with_block_when_putting_then_it_waits_for_room(tmp_path: Path) -> None:
    first = item(1)
    with Spool(tmp_path / "s.sqlite3", max_bytes=len(first.body) + 10, when_full="block") as spool:
        spool.put_many([first])
        # WHEN nothing drains: the put gives up after its timeout and nothing is lost or dropped
        with pytest.raises(SpoolFullError):
            spool.put_many([item(2)], timeout=0.2)
        assert spool.depth() == 1
        # WHEN the uploader acks meanwhile: the blocked put goes through
        threading.Timer(0.2, lambda: spool.ack([first.event_id])).start()
        started = time.monotonic()
        assert len(spool.put_many([item(2)], timeout=5).spooled) == 1
        assert time.monotonic() - started >= 0.15
        assert "dropped_spool_full" not in spool.stats().counters


def test_given_full_spool_with_drop_oldest_then_oldest_non_alarms_go_and_alarms_stay(tmp_path: Path) -> None:
    alarms = [item(i, "alarm") for i in range(0, 10, 2)]
    others = [item(i, "device_status") for i in range(1, 10, 2)]
    capacity = sum(len(i.body) for i in alarms + others)
    with Spool(tmp_path / "s.sqlite3", max_bytes=capacity, when_full="drop_oldest") as spool:
        spool.put_many(alarms + others)
        # WHEN three more non-alarm events arrive
        newer = [item(20 + i, "device_status") for i in range(3)]
        result = spool.put_many(newer)
        # THEN the oldest non-alarm events were dropped, every alarm is still there
        kept = {p.event_id for p in spool.pending(100)}
        assert {a.event_id for a in alarms} <= kept
        assert {n.event_id for n in newer} <= kept
        assert set(result.dropped) == {o.event_id for o in others[: len(result.dropped)]}
        assert len(result.dropped) >= 3
        assert spool.stats().counters["dropped_spool_full"] == len(result.dropped)
        assert spool.stats().bytes <= capacity

        # WHEN only alarms are left and more alarms arrive, they are admitted over the bound, never dropped
        spool.purge(outbox=True)
        spool.put_many(alarms)
        more = [item(40 + i, "alarm") for i in range(5)]
        assert len(spool.put_many(more).spooled) == 5
        assert spool.depth() == 10
        # and an incoming non-alarm is the one dropped
        late = item(60, "device_status")
        assert spool.put_many([late]).dropped == [late.event_id]


def test_expire_moves_old_events_to_quarantine(tmp_path: Path) -> None:
    now = [1000.0]
    with Spool(tmp_path / "s.sqlite3", clock=lambda: now[0]) as spool:
        spool.put_many([item(1)])
        now[0] = 2000.0
        spool.put_many([item(2)])
        assert spool.expire(older_than=1500.0) == 1
        assert [q.code for q in spool.quarantined()] == ["retention_expired"]
        assert spool.depth() == 1


def test_meta_commits_with_the_events(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with Spool(path) as spool:
        spool.put_many([item(1)], meta={"src.next_seq": "1"})
    with Spool(path, readonly=True) as spool:
        assert spool.get_meta("src.next_seq") == "1"
        assert spool.integrity_ok()
        assert spool.stats().as_dict(time.time())["depth"] == 1
