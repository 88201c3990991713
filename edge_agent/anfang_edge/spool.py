"""The durable spool: a SQLite outbox keyed by ``event_id``, a quarantine table, counters.

SQLite in WAL mode with ``synchronous=FULL``: a put returns only after its transaction is on disk, so a
source acknowledges a device only for events that survive kill -9 and power loss. Bounded by
``spool_max_megabytes`` (bytes of event bodies): ``when_full = "block"`` makes puts wait for room,
``"drop_oldest"`` drops the oldest non-alarm events (alarms are never dropped) and counts the drops.

The spool holds personal data (names, ID numbers, faces): its folder is made 0700 and its files 0600 whatever
the process umask. With ``allowed_devices`` (the devices the agent's key may send for) an event for any other
device is refused at put time (``PutResult.forbidden``), so it can never sit at the head of the outbox.

>>> spool = Spool(Path("spool.sqlite3"), max_bytes=512 * 2**20)
>>> spool.put_many([item_from_event(event)])
>>> batch = spool.next_batch(max_events=100, max_bytes=4 * 2**20)
>>> spool.ack([p.event_id for p in batch])
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from anfang.contracts import EventBase

from .errors import SpoolError, SpoolFullError

__all__ = [
    "BATCH_OVERHEAD_BYTES",
    "PendingEvent",
    "PutResult",
    "QuarantinedEvent",
    "Spool",
    "SpoolItem",
    "SpoolStats",
    "item_from_event",
]

WhenFull = Literal["block", "drop_oldest"]
#: Bytes a batch adds around its events: ``{"events":[`` + ``]}`` and the commas.
BATCH_OVERHEAD_BYTES: Final = 16

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    device_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    captured_ms INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    size INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_capture_order ON outbox (captured_ms, seq);
CREATE TABLE IF NOT EXISTS quarantine (
    event_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    captured_ms INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    quarantined_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class SpoolItem:
    """An event ready for the spool: its wire JSON and the columns the spool orders and bounds by."""

    event_id: str
    device_id: str
    event_type: str
    captured_ms: int
    body: bytes


def item_from_event(event: EventBase) -> SpoolItem:
    """The spool item of a validated event (its canonical wire JSON)."""
    return SpoolItem(
        event_id=event.event_id,
        device_id=event.device_id,
        event_type=str(getattr(event, "event_type", "")),
        captured_ms=int(event.captured_at.timestamp() * 1000),
        body=event.model_dump_json(exclude_none=True).encode("utf-8"),
    )


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event in the outbox, waiting for delivery."""

    seq: int
    event_id: str
    device_id: str
    event_type: str
    captured_ms: int
    enqueued_at: float
    attempts: int
    body: bytes


@dataclass(frozen=True, slots=True)
class QuarantinedEvent:
    event_id: str
    device_id: str
    event_type: str
    captured_ms: int
    quarantined_at: float
    attempts: int
    code: str
    reason: str


@dataclass(slots=True)
class PutResult:
    """What happened to each event of a put: spooled, already known, or dropped for room."""

    spooled: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    #: Not spooled: the agent's key may not send for the event's device.
    forbidden: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int
    bytes: int
    max_bytes: int
    oldest_enqueued_at: float | None
    quarantined: int
    counters: dict[str, int]
    meta: dict[str, str]

    def as_dict(self, now: float) -> dict[str, Any]:
        oldest_age = None if self.oldest_enqueued_at is None else round(max(0.0, now - self.oldest_enqueued_at), 3)
        return {
            "depth": self.depth,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "oldest_age_secs": oldest_age,
            "quarantined": self.quarantined,
            "last_success_at": self.meta.get("last_success_at"),
            "last_error": self.meta.get("last_error"),
            "counters": self.counters,
        }


class Spool:
    """The durable outbox. Thread-safe: sources put from their threads, the uploader reads and acks."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 512 * 1024 * 1024,
        when_full: WhenFull = "block",
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
        allowed_devices: frozenset[str] | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.allowed_devices = allowed_devices
        self._clock = clock
        self._cond = threading.Condition(threading.RLock())
        try:
            if readonly:
                self._db = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=10
                )
            else:
                _private_dir(path.parent)
                _private_file(path)
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
                self._db.execute("PRAGMA journal_mode=WAL")
                # deleted personal data is zeroed where that costs no extra I/O (ON would double the acks' writes)
                self._db.execute("PRAGMA secure_delete=FAST")
                for suffix in ("-wal", "-shm"):
                    _private_file(path.with_name(path.name + suffix), create=False)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            if not readonly:
                self._db.executescript(_SCHEMA)
            self._bytes = self._sum_bytes()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open spool {path}: {exc}") from exc
        except OSError as exc:
            raise SpoolError(f"cannot secure spool {path}: {exc.strerror}") from exc

    # ------------------------------------------------------------------------------------------ basics

    def close(self) -> None:
        with self._cond:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sum_bytes(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()
        return int(row[0])

    def _bump(self, counts: dict[str, int]) -> None:
        self._db.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            [(name, n, n) for name, n in counts.items() if n],
        )

    def _set_meta(self, values: dict[str, str]) -> None:
        self._db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def _tx(self) -> _Tx:
        return _Tx(self._db)

    # ------------------------------------------------------------------------------------------ put

    def put_many(
        self, items: Sequence[SpoolItem], *, timeout: float | None = None, meta: dict[str, str] | None = None
    ) -> PutResult:
        """Spool ``items`` in one transaction and return once it is durable.

        ``meta`` is written in the same transaction (a source's progress cursor, so progress and events
        commit together). With ``when_full = "block"`` waits up to ``timeout`` (None: forever) for room,
        then raises ``SpoolFullError``; an empty spool always admits a put.
        """
        result = PutResult()
        if self.allowed_devices is not None:
            allowed = self.allowed_devices
            result.forbidden = [item.event_id for item in items if item.device_id not in allowed]
            items = [item for item in items if item.device_id in allowed]
        incoming = sum(len(item.body) for item in items)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self.when_full == "block":
                while self._bytes > 0 and self._bytes + incoming > self.max_bytes:
                    self._bytes = self._sum_bytes()  # another process (spool purge) may have made room
                    if self._bytes == 0 or self._bytes + incoming <= self.max_bytes:
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise SpoolFullError(f"spool is full ({self._bytes} of {self.max_bytes} bytes)")
                    self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
            with self._tx():
                admitted = self._admit(items, incoming, result)
                now = self._clock()
                for item in admitted:
                    cursor = self._db.execute(
                        "INSERT INTO outbox (event_id, device_id, event_type, captured_ms, enqueued_at, size, body)"
                        " SELECT ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS"
                        " (SELECT 1 FROM quarantine WHERE event_id = ?) ON CONFLICT(event_id) DO NOTHING",
                        (
                            item.event_id,
                            item.device_id,
                            item.event_type,
                            item.captured_ms,
                            now,
                            len(item.body),
                            item.body,
                            item.event_id,
                        ),
                    )
                    if cursor.rowcount == 1:
                        result.spooled.append(item.event_id)
                        self._bytes += len(item.body)
                    else:
                        result.duplicate.append(item.event_id)
                self._bump(
                    {
                        "received": len(items) + len(result.forbidden),
                        "spooled": len(result.spooled),
                        "duplicate_received": len(result.duplicate),
                        "dropped_spool_full": len(result.dropped),
                        "refused_forbidden_device": len(result.forbidden),
                    }
                )
                if meta:
                    self._set_meta(meta)
            self._cond.notify_all()
            return result

    def _admit(self, items: Sequence[SpoolItem], incoming: int, result: PutResult) -> list[SpoolItem]:
        """With drop_oldest, make room by dropping the oldest non-alarm events, spooled ones first."""
        if self.when_full != "drop_oldest" or self._bytes + incoming <= self.max_bytes:
            return list(items)
        excess = self._bytes + incoming - self.max_bytes
        victims: list[tuple[int, int]] = []
        for seq, size in self._db.execute(
            "SELECT seq, size FROM outbox WHERE event_type != 'alarm' ORDER BY captured_ms, seq"
        ):
            if excess <= 0:
                break
            victims.append((seq, size))
            excess -= size
        if victims:
            for seq, size in victims:
                row = self._db.execute("DELETE FROM outbox WHERE seq = ? RETURNING event_id", (seq,)).fetchone()
                if row is not None:
                    result.dropped.append(str(row[0]))
                    self._bytes -= size
        admitted: list[SpoolItem] = []
        # still over: drop incoming non-alarm events, oldest capture first; alarms are always admitted
        for item in sorted(items, key=lambda i: i.captured_ms):
            if excess > 0 and item.event_type != "alarm":
                result.dropped.append(item.event_id)
                excess -= len(item.body)
            else:
                admitted.append(item)
        return admitted

    # ------------------------------------------------------------------------------------------ drain

    def wait_for_events(self, timeout: float) -> None:
        """Block until a put happens or ``timeout`` passes (the uploader's idle wait)."""
        with self._cond:
            self._cond.wait(timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def next_batch(self, *, max_events: int, max_bytes: int) -> list[PendingEvent]:
        """The oldest events in capture order, up to ``max_events`` and ``max_bytes`` of request body.

        Sizes are read first and bodies only for the events that fit, so memory stays near ``max_bytes``.
        """
        with self._cond:
            heads = self._db.execute(
                "SELECT seq, size FROM outbox ORDER BY captured_ms, seq LIMIT ?", (max_events,)
            ).fetchall()
            chosen: list[int] = []
            total = BATCH_OVERHEAD_BYTES
            for seq, size in heads:
                if chosen and total + size + 1 > max_bytes:
                    break
                total += size + 1
                chosen.append(seq)
            if not chosen:
                return []
            rows = self._db.execute(
                "SELECT seq, event_id, device_id, event_type, captured_ms, enqueued_at, attempts, body FROM outbox"
                f" WHERE seq IN ({','.join('?' * len(chosen))}) ORDER BY captured_ms, seq",
                chosen,
            ).fetchall()
        return [PendingEvent(*row) for row in rows]

    def ack(self, event_ids: Iterable[str], *, counter: str = "sent") -> int:
        """Remove delivered events; returns how many were removed."""
        ids = list(event_ids)
        if not ids:
            return 0
        with self._cond, self._tx():
            removed = self._delete(ids)
            self._bump({counter: removed})
            self._set_meta({"last_success_at": _iso(self._clock())})
            self._cond.notify_all()
            return removed

    def settle(
        self,
        *,
        accepted: Sequence[str] = (),
        duplicate: Sequence[str] = (),
        rejected: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        """Apply one response in one transaction: delivered events leave, rejected ones go to quarantine."""
        with self._cond, self._tx():
            sent = self._delete(accepted)
            dup = self._delete(duplicate)
            moved = self._move_to_quarantine(rejected or {})
            self._bump({"sent": sent, "duplicate_at_api": dup, "rejected": moved})
            if accepted or duplicate:
                self._set_meta({"last_success_at": _iso(self._clock())})
            self._cond.notify_all()

    def _delete(self, event_ids: Iterable[str]) -> int:
        removed = 0
        for event_id in event_ids:
            row = self._db.execute("DELETE FROM outbox WHERE event_id = ? RETURNING size", (event_id,)).fetchone()
            if row is not None:
                removed += 1
                self._bytes -= int(row[0])
        return removed

    def _move_to_quarantine(self, reasons: dict[str, tuple[str, str]]) -> int:
        now = self._clock()
        moved = 0
        for event_id, (code, reason) in reasons.items():
            row = self._db.execute(
                "DELETE FROM outbox WHERE event_id = ?"
                " RETURNING event_id, device_id, event_type, captured_ms, enqueued_at, attempts, size, body",
                (event_id,),
            ).fetchone()
            if row is None:
                continue
            self._db.execute(
                "INSERT OR REPLACE INTO quarantine (event_id, device_id, event_type, captured_ms, enqueued_at,"
                " quarantined_at, attempts, code, reason, size, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row[:5], now, row[5], code, reason[:500], row[6], row[7]),
            )
            self._bytes -= int(row[6])
            moved += 1
        return moved

    def quarantine(self, reasons: dict[str, tuple[str, str]], *, counter: str = "rejected") -> int:
        """Move events to the quarantine table with ``(code, reason)``; they are never retried by themselves."""
        if not reasons:
            return 0
        with self._cond, self._tx():
            moved = self._move_to_quarantine(reasons)
            self._bump({counter: moved})
            self._cond.notify_all()
            return moved

    def record_failure(self, event_ids: Iterable[str], error: str) -> None:
        """Count a failed attempt on events that stay in the outbox."""
        ids = list(event_ids)
        with self._cond, self._tx():
            self._db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE event_id = ?",
                [(error[:200], event_id) for event_id in ids],
            )
            self._set_meta({"last_error": error[:200], "last_error_at": _iso(self._clock())})

    def bump(self, counts: dict[str, int]) -> None:
        with self._cond, self._tx():
            self._bump(counts)

    def expire(self, older_than: float) -> int:
        """Quarantine events enqueued before ``older_than`` (unix time): past retention, kept for an operator."""
        with self._cond:
            ids = [
                str(row[0])
                for row in self._db.execute("SELECT event_id FROM outbox WHERE enqueued_at < ?", (older_than,))
            ]
        return self.quarantine(
            dict.fromkeys(ids, ("retention_expired", "undelivered past retention_hours")), counter="expired"
        )

    # ------------------------------------------------------------------------------------------ operator

    def get_meta(self, key: str) -> str | None:
        with self._cond:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def stats(self) -> SpoolStats:
        with self._cond:
            depth, total, oldest = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(enqueued_at) FROM outbox"
            ).fetchone()
            quarantined = self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
            counters = {str(k): int(v) for k, v in self._db.execute("SELECT name, value FROM counters ORDER BY name")}
            meta = {str(k): str(v) for k, v in self._db.execute("SELECT key, value FROM meta ORDER BY key")}
        return SpoolStats(int(depth), int(total), self.max_bytes, oldest, int(quarantined), counters, meta)

    def depth(self) -> int:
        with self._cond:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def pending(self, limit: int = 100) -> list[PendingEvent]:
        return self.next_batch(max_events=limit, max_bytes=1 << 62)

    def quarantined(self, limit: int = 100) -> list[QuarantinedEvent]:
        with self._cond:
            rows = self._db.execute(
                "SELECT event_id, device_id, event_type, captured_ms, quarantined_at, attempts, code, reason"
                " FROM quarantine ORDER BY quarantined_at, event_id LIMIT ?",
                (limit,),
            ).fetchall()
        return [QuarantinedEvent(*row) for row in rows]

    def retry_quarantined(self, event_ids: Sequence[str] | None = None) -> int:
        """Move quarantined events (all, or ``event_ids``) back to the outbox."""
        with self._cond, self._tx():
            where, args = (
                ("", ())
                if not event_ids
                else (
                    f" WHERE event_id IN ({','.join('?' * len(event_ids))})",
                    tuple(event_ids),
                )
            )
            rows = self._db.execute(
                "DELETE FROM quarantine"
                + where
                + " RETURNING event_id, device_id, event_type, captured_ms, size, body",
                args,
            ).fetchall()
            now = self._clock()
            self._db.executemany(
                "INSERT INTO outbox (event_id, device_id, event_type, captured_ms, enqueued_at, size, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(event_id) DO NOTHING",
                [(r[0], r[1], r[2], r[3], now, r[4], r[5]) for r in rows],
            )
            self._bytes = self._sum_bytes()
            self._bump({"retried_from_quarantine": len(rows)})
            self._cond.notify_all()
            return len(rows)

    def purge(self, *, outbox: bool = False, older_than: float | None = None) -> int:
        """Delete the quarantine (only events quarantined before ``older_than``, unix time, when given; and with
        ``outbox=True`` every undelivered event); returns rows deleted."""
        with self._cond, self._tx():
            if older_than is None:
                deleted = self._db.execute("DELETE FROM quarantine").rowcount
            else:
                deleted = self._db.execute("DELETE FROM quarantine WHERE quarantined_at < ?", (older_than,)).rowcount
            if outbox:
                deleted += self._db.execute("DELETE FROM outbox").rowcount
                self._bytes = 0
            self._bump({"purged": deleted})
            self._cond.notify_all()
            return int(deleted)

    def integrity_ok(self) -> bool:
        with self._cond:
            return bool(self._db.execute("PRAGMA quick_check").fetchone()[0] == "ok")


def _private_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) and make it 0700: only the agent's user may list or enter it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(directory.stat().st_mode) != 0o700:
        directory.chmod(0o700)


def _private_file(path: Path, *, create: bool = True) -> None:
    """Make ``path`` 0600 (created empty when missing and ``create``), whatever the umask."""
    if create:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.chmod(0o600)


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (rollback on error); with synchronous=FULL the commit is durable."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def dumps_compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
