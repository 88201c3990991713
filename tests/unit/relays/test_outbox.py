"""The relay outbox on real SQLite files: durable puts, deduplication by (device_id, event_id), per-record
backoff, tombstones, private files."""

from __future__ import annotations

import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from anfang_ops.relays import Outbox, OutboxEntry


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _entry(n: int, device: str = "33010600001320000001") -> OutboxEntry:
    return OutboxEntry(device, f"019ace03-5c00-7000-8000-{n:012d}", "face_capture", b'{"n":%d}' % n)


def test_a_key_is_kept_once_even_after_delivery(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        assert outbox.put_many([_entry(1), _entry(2)]).added == [_entry(1).key, _entry(2).key]
        # GIVEN record 1 delivered
        assert outbox.ack([_entry(1).key]) == 1
        # WHEN the queue delivers both again, and the same event id from another device
        other = _entry(1, device="33010600001320000002")
        result = outbox.put_many([_entry(1), _entry(2), other])
        # THEN only the other device's event is new; the delivered one is not sent again
        assert result.duplicate == [_entry(1).key, _entry(2).key] and result.added == [other.key]
        assert [r.key for r in outbox.due(max_records=10, max_bytes=1 << 20)] == [_entry(2).key, other.key]
        assert outbox.is_delivered(_entry(1).key)


def test_a_failed_record_waits_its_own_backoff_and_its_neighbours_do_not(tmp_path: Path) -> None:
    clock = Clock()
    with Outbox(tmp_path / "o.sqlite3", clock=clock) as outbox:
        outbox.put_many([_entry(1), _entry(2)])
        outbox.retry({_entry(1).key: "StatusCode 2: busy"}, lambda attempts: 10.0 * attempts)
        assert [r.key for r in outbox.due(max_records=10, max_bytes=1 << 20)] == [_entry(2).key]
        clock.now += 10
        record = next(r for r in outbox.due(max_records=10, max_bytes=1 << 20) if r.key == _entry(1).key)
        assert (record.key, record.attempts, record.last_error) == (_entry(1).key, 1, "StatusCode 2: busy")


def test_batches_are_bounded_by_bytes_but_never_empty(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        outbox.put_many([_entry(n) for n in range(5)])
        assert len(outbox.due(max_records=10, max_bytes=20)) == 2  # 8-byte bodies
        assert len(outbox.due(max_records=10, max_bytes=1)) == 1


def test_tombstones_are_forgotten_after_the_window(tmp_path: Path) -> None:
    clock = Clock()
    with Outbox(tmp_path / "o.sqlite3", clock=clock) as outbox:
        outbox.put_many([_entry(1)])
        outbox.ack([_entry(1).key])
        clock.now += 3600
        assert outbox.forget_delivered(7200) == 0
        assert outbox.forget_delivered(1800) == 1
        assert outbox.stats().delivered_kept == 0


def test_a_returned_put_survives_kill_9_of_its_process(tmp_path: Path) -> None:
    # GIVEN a process that puts a record and is killed right after the put returns
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from anfang_ops.relays import Outbox, OutboxEntry
        outbox = Outbox(Path({str(tmp_path / "o.sqlite3")!r}))
        outbox.put_many([OutboxEntry("33010600001320000001", "e-1", "face_capture", b"{{}}")])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert result.returncode == -9
    # THEN the record is there when the outbox is opened again
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        assert [r.event_id for r in outbox.pending()] == ["e-1"]


def test_the_outbox_is_private(tmp_path: Path) -> None:
    with Outbox(tmp_path / "state" / "o.sqlite3") as outbox:
        outbox.put_many([_entry(1)])
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "state").iterdir())
