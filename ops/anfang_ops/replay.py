"""``anfang replay``: re-publish archived records of a time range to their destination's topic, unchanged.

The archive (``anfang.aws.archive``) is read by hour partition: every object under the hours that overlap
[since, until) is read and each record whose ``received_at`` lies in the range (and whose ``event_type`` is
one of ``event_types``, when given) is published again with the message attributes the process function
gives it (``event_type``, ``site_type``, ``town``, ``schema``), through ``aws.batch.send_batches``. The body is
the archived line as it is: the same ``event_id`` and ``release``, so a replayed record still verifies and
consumers dedupe it on (``device_id``, ``event_id``).

A replayed record is delivered to the archive queue too and archived again (same partition, another object):
the archive then holds it twice. Replay therefore publishes each (``device_id``, ``event_id``) once per run
(``duplicates`` counts the others), so replaying a range twice never publishes a record twice in one run.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from anfang.aws.archive import ArchiveError, RecordArchive, hour_prefixes, parse_instant
from anfang.aws.batch import Message, Sender, send_batches, string_attributes

__all__ = ["ReplayError", "ReplayRange", "Replayer", "replay_range"]

#: Records published per ``send_batches`` call (progress is reported after each).
_CHUNK = 100


class ReplayError(Exception):
    """The replay cannot run or cannot read the archive (one line)."""


@dataclass(frozen=True, slots=True)
class ReplayRange:
    destination: str
    since: dt.datetime
    until: dt.datetime
    event_types: frozenset[str] = frozenset()
    max_records: int | None = None
    dry_run: bool = False


def replay_range(since: str, until: str) -> tuple[dt.datetime, dt.datetime]:
    """Parse ``--since``/``--until`` (RFC 3339, a zone required); ReplayError on a bad or empty range."""
    try:
        start, end = parse_instant(since), parse_instant(until)
    except ValueError as exc:
        raise ReplayError(f"bad time: {exc} (RFC 3339 with a zone, e.g. 2026-11-29T08:00:00Z)") from None
    if end <= start:
        raise ReplayError(f"--until {until} is not after --since {since}")
    return start, end


@dataclass
class Replayer:
    archive: RecordArchive
    send: Sender
    progress: Callable[[Counter[str]], None] = lambda counts: None
    counts: Counter[str] = field(default_factory=Counter)

    def run(self, scope: ReplayRange) -> Counter[str]:
        """Read, filter and publish; the counts ``read``, ``matched``, ``published``, ``failed``, ``duplicates``."""
        counts = self.counts
        for name in ("read", "matched", "published", "failed", "duplicates"):
            counts[name] += 0
        seen: set[tuple[str, str]] = set()
        pending: list[Message] = []
        for body in self._bodies(scope):
            counts["read"] += 1
            try:
                record = json.loads(body)
                received = parse_instant(str(record["received_at"]))
            except (ValueError, KeyError, TypeError):
                raise ReplayError(f"archive holds a line that is not a record (line {counts['read']})") from None
            if not scope.since <= received < scope.until:
                continue
            if scope.event_types and record.get("event_type") not in scope.event_types:
                continue
            key = (str(record.get("device_id")), str(record.get("event_id")))
            if key in seen:
                counts["duplicates"] += 1
                continue
            if scope.max_records is not None and counts["matched"] >= scope.max_records:
                counts["capped"] = 1
                break
            seen.add(key)
            counts["matched"] += 1
            pending.append(Message(id=f"{key[0]}/{key[1]}", body=body, attributes=_attributes(record)))
            if len(pending) >= _CHUNK:
                self._flush(pending, scope)
        self._flush(pending, scope)
        return counts

    def _bodies(self, scope: ReplayRange) -> Iterable[str]:
        try:
            for prefix in hour_prefixes(scope.destination, scope.since, scope.until):
                for key in self.archive.keys(prefix):
                    yield from self.archive.read(key)
        except ArchiveError as exc:
            raise ReplayError(str(exc)) from None

    def _flush(self, pending: list[Message], scope: ReplayRange) -> None:
        if not pending:
            return
        if not scope.dry_run:
            failed = send_batches(self.send, pending)
            self.counts["failed"] += len(failed)
            self.counts["published"] += len(pending) - len(failed)
        pending.clear()
        self.progress(self.counts)


def _attributes(record: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The message attributes the process function publishes a record with."""
    site = record.get("site") if isinstance(record.get("site"), dict) else {}
    return string_attributes(
        {
            "event_type": str(record.get("event_type") or ""),
            "site_type": str((site or {}).get("site_type") or "unknown"),
            "town": str(record.get("town") or ""),
            "schema": str(record.get("schema") or ""),
        }
    )
