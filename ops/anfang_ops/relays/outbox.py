"""The relay's durable outbox: a SQLite file keyed by (device_id, event_id), fsync before the queue is told.

SQLite in WAL mode with ``synchronous=FULL``: :meth:`Outbox.put_many` returns only after its transaction is on
disk, and only then does the reader delete the SQS messages, so a record survives kill -9 and power loss
between the queue and the upstream. A record leaves the outbox only when the upstream acknowledged it; it
then stays as a *tombstone* (its key and delivery time, the body cleared) for ``dedupe_window_hours``, so a
redelivery of the same (device_id, event_id) from the queue is recognised and never sent twice by the relay.

Failed records are retried with their own backoff (``next_attempt_at``), so one record the upstream keeps
refusing never holds back its neighbours, and is never dropped: ``anfang relay status`` shows it with its
last error. The file holds personal data (faces, plates): its folder is made 0700 and its files 0600.

Why not ``anfang_edge.spool``: the ops tooling may not import the edge agent (import rules), and the two keep
different keys (the edge spool is keyed by event_id for one site, the relay by (device_id, event_id) for a
town) and different lifecycles (tombstones for deduplication). The durability pattern is the same.

>>> outbox = Outbox(Path("relay.sqlite3"))
>>> outbox.put_many([OutboxEntry(device_id, event_id, "face_capture", body)])   # durable on return
>>> batch = outbox.due(max_records=50, max_bytes=8 << 20)
>>> outbox.ack([r.key for r in batch])
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .errors import OutboxError

__all__ = ["Key", "Outbox", "OutboxEntry", "OutboxStats", "PendingRecord", "PutResult"]

#: (device_id, event_id): the idempotency key end to end (DESIGN 2).
Key = tuple[str, str]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    delivered_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    size INTEGER NOT NULL,
    body BLOB,
    UNIQUE (device_id, event_id)
);
CREATE INDEX IF NOT EXISTS records_due ON records (delivered_at, next_attempt_at, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A record to keep until delivered: its key, type and the JSON bytes as read from the queue."""

    device_id: str
    event_id: str
    event_type: str
    body: bytes

    @property
    def key(self) -> Key:
        return (self.device_id, self.event_id)


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A record waiting for delivery."""

    seq: int
    device_id: str
    event_id: str
    event_type: str
    enqueued_at: float
    attempts: int
    last_error: str | None
    body: bytes

    @property
    def key(self) -> Key:
        return (self.device_id, self.event_id)


@dataclass(slots=True)
class PutResult:
    """What a put did: keys newly kept, and keys already known (pending or delivered: a redelivery)."""

    added: list[Key] = field(default_factory=list)
    duplicate: list[Key] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    pending_bytes: int
    delivered_kept: int
    oldest_pending_at: float | None
    failing: int
    counters: dict[str, int]

    def as_dict(self, now: float) -> dict[str, Any]:
        oldest = None if self.oldest_pending_at is None else round(now - self.oldest_pending_at, 1)
        return {
            "pending": self.pending,
            "pending_bytes": self.pending_bytes,
            "failing": self.failing,
            "oldest_pending_age_secs": oldest,
            "delivered_kept_for_dedupe": self.delivered_kept,
            "counters": dict(sorted(self.counters.items())),
        }


class Outbox:
    """Thread-safe (one connection behind a lock); the reader and the sender share one instance."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        _private_dir(path.parent)
        for suffix in ("", "-wal", "-shm"):
            _private_file(Path(f"{path}{suffix}"), create=suffix == "")
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at each commit, so a returned put survives power loss, not only kill -9
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=FAST")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"cannot open the outbox {path}: {exc}") from exc
        for suffix in ("-wal", "-shm"):
            _private_file(Path(f"{path}{suffix}"), create=False)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _bump(self, counts: dict[str, int]) -> None:
        self._db.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            [(name, n, n) for name, n in counts.items() if n],
        )

    # ------------------------------------------------------------------------------------------ intake

    def put_many(self, entries: Sequence[OutboxEntry], *, counts: dict[str, int] | None = None) -> PutResult:
        """Keep ``entries`` (one transaction, on disk when this returns); known keys are duplicates."""
        result = PutResult()
        now = self._clock()
        with self._changed, self._tx() as db:
            for entry in entries:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO records (device_id, event_id, event_type, enqueued_at, size, body)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (entry.device_id, entry.event_id, entry.event_type, now, len(entry.body), entry.body),
                )
                (result.added if cursor.rowcount == 1 else result.duplicate).append(entry.key)
            self._bump({"received": len(result.added), "duplicate": len(result.duplicate), **(counts or {})})
            if result.added:
                self._changed.notify_all()
        return result

    def bump(self, counts: dict[str, int]) -> None:
        """Add to the named counters (durably)."""
        with self._lock, self._tx():
            self._bump(counts)

    # ------------------------------------------------------------------------------------------ delivery

    def due(self, *, max_records: int, max_bytes: int, event_types: Iterable[str] | None = None) -> list[PendingRecord]:
        """Pending records whose retry time has come, oldest first, at most ``max_records`` / ``max_bytes``.

        The first record is returned even when it alone exceeds ``max_bytes`` (it must go some time).
        """
        now = self._clock()
        where = "delivered_at IS NULL AND next_attempt_at <= ?"
        args: list[Any] = [now]
        if event_types is not None:
            types = list(event_types)
            where += f" AND event_type IN ({','.join('?' * len(types))})"
            args.extend(types)
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, device_id, event_id, event_type, enqueued_at, attempts, last_error, body FROM records"
                f" WHERE {where} ORDER BY next_attempt_at, seq LIMIT ?",
                (*args, max_records),
            ).fetchall()
        batch: list[PendingRecord] = []
        total = 0
        for row in rows:
            record = PendingRecord(*row)
            if batch and total + len(record.body) > max_bytes:
                break
            total += len(record.body)
            batch.append(record)
        return batch

    def next_due_at(self) -> float | None:
        """When the earliest pending record may be tried (None: nothing pending)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(next_attempt_at) FROM records WHERE delivered_at IS NULL").fetchone()
        return None if row[0] is None else float(row[0])

    def wait(self, timeout: float) -> None:
        """Sleep until a put adds records or ``timeout`` passes."""
        with self._changed:
            self._changed.wait(timeout)

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def ack(self, keys: Iterable[Key], *, counter: str = "sent") -> int:
        """The upstream has these: keep only their tombstones (key + time), the body is cleared."""
        now = self._clock()
        with self._lock, self._tx() as db:
            done = 0
            for device_id, event_id in keys:
                done += db.execute(
                    "UPDATE records SET delivered_at = ?, body = NULL, last_error = NULL"
                    " WHERE device_id = ? AND event_id = ? AND delivered_at IS NULL",
                    (now, device_id, event_id),
                ).rowcount
            self._bump({counter: done})
        return done

    def retry(self, failures: dict[Key, str], delay_secs: Callable[[int], float], *, counter: str = "failed") -> None:
        """Count one more failed attempt per key and set its next try ``delay_secs(attempts)`` from now."""
        now = self._clock()
        with self._lock, self._tx() as db:
            for (device_id, event_id), error in failures.items():
                row = db.execute(
                    "SELECT attempts FROM records WHERE device_id = ? AND event_id = ? AND delivered_at IS NULL",
                    (device_id, event_id),
                ).fetchone()
                if row is None:
                    continue
                attempts = int(row[0]) + 1
                db.execute(
                    "UPDATE records SET attempts = ?, next_attempt_at = ?, last_error = ?"
                    " WHERE device_id = ? AND event_id = ?",
                    (attempts, now + delay_secs(attempts), error[:500], device_id, event_id),
                )
            self._bump({counter: len(failures)})

    def forget_delivered(self, older_than_secs: float) -> int:
        """Drop tombstones delivered more than ``older_than_secs`` ago (the deduplication window)."""
        cutoff = self._clock() - older_than_secs
        with self._lock, self._tx() as db:
            return db.execute(
                "DELETE FROM records WHERE delivered_at IS NOT NULL AND delivered_at < ?", (cutoff,)
            ).rowcount

    # ------------------------------------------------------------------------------------------ reading

    def is_delivered(self, key: Key) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT delivered_at FROM records WHERE device_id = ? AND event_id = ?", key
            ).fetchone()
        return row is not None and row[0] is not None

    def pending(self, limit: int = 100) -> list[PendingRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, device_id, event_id, event_type, enqueued_at, attempts, last_error, body FROM records"
                " WHERE delivered_at IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [PendingRecord(*row) for row in rows]

    def stats(self) -> OutboxStats:
        with self._lock:
            pending, size, oldest, failing = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(enqueued_at), COALESCE(SUM(attempts > 0), 0)"
                " FROM records WHERE delivered_at IS NULL"
            ).fetchone()
            kept = self._db.execute("SELECT COUNT(*) FROM records WHERE delivered_at IS NOT NULL").fetchone()[0]
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return OutboxStats(int(pending), int(size), int(kept), oldest, int(failing), counters)


def _private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(directory.stat().st_mode) & 0o077:
        directory.chmod(0o700)


def _private_file(path: Path, *, create: bool = True) -> None:
    if create and not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
