"""The authority rule: which health-code record of a person counts (``anfang.pipeline.enrich.HealthCodeLookup``).

The rule itself is documented in :mod:`anfang.health_codes.table`. AWS calls: one BatchGetItem per 50 persons,
plus one GetItem for the current-snapshot pointer at most every ``pointer_cache_secs``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from anfang.contracts.types import HealthCodeStatus
from anfang.health_codes.table import (
    CurrentSnapshot,
    HealthCodeRecord,
    HealthCodeTable,
    order_key,
    snapshot_record_key,
)

__all__ = ["CurrentHealthCodes"]


class CurrentHealthCodes:
    """The enrichment's view of the table (``anfang.pipeline.enrich.HealthCodeLookup``), applying the authority rule.

    One BatchGetItem per 100 keys (two keys a person: the delta and the current snapshot's line); the
    pointer to the current snapshot is read with its own call at most every ``pointer_cache_secs``. A stale
    pointer is harmless: a superseded snapshot's lines stay in the table until their TTL.

    >>> codes = CurrentHealthCodes(HealthCodeTable(dynamodb_client, "anfang-330106-health-codes"))
    >>> codes.batch_get([pk])
    {'3f0c...': HealthCodeRecord(person_key='3f0c...', status='green', updated_at=datetime(...), source_version=...)}
    """

    def __init__(
        self, table: HealthCodeTable, *, pointer_cache_secs: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._table = table
        self._cache_secs = pointer_cache_secs
        self._clock = clock
        self._pointer: tuple[float, CurrentSnapshot | None] | None = None

    def current(self) -> CurrentSnapshot | None:
        """The authoritative snapshot (cached for ``pointer_cache_secs``)."""
        now = self._clock()
        if self._pointer is None or self._pointer[0] <= now:
            self._pointer = (now + self._cache_secs, self._table.current_snapshot())
        return self._pointer[1]

    def batch_get(self, person_keys: Sequence[str]) -> dict[str, HealthCodeRecord]:
        """The code that counts for each person key, by the authority rule; persons without one left out."""
        current = self.current()
        wanted = list(person_keys)
        if current is not None:
            wanted += [snapshot_record_key(k, current.snapshot_id) for k in person_keys]
        items = self._table.get_many(wanted)
        out: dict[str, HealthCodeRecord] = {}
        for key in person_keys:
            candidates: list[HealthCodeRecord] = []
            delta = items.get(key)
            if delta is not None:
                seen = _record(key, delta)
                if current is None or seen.updated_at > current.as_of:
                    candidates.append(seen)
            line = items.get(snapshot_record_key(key, current.snapshot_id)) if current is not None else None
            if line is not None and current is not None:
                seen = _record(key, line)
                candidates.append(replace(seen, updated_at=max(seen.updated_at, current.as_of)))
            if candidates:
                out[key] = max(candidates, key=order_key)  # a tie goes to the more severe status
        return out


def _record(key: str, item: Mapping[str, Any]) -> HealthCodeRecord:
    return HealthCodeRecord(
        person_key=key,
        status=cast(HealthCodeStatus, item["status"]["S"]),
        updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
        source_version=item["source_version"]["S"],
    )
