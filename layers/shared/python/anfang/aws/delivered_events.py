"""The dedupe stage: which events were already delivered, and to which destinations.

Keyed on ``[device_id, event_id]`` in the delivered-events table (partition key ``device_id``, sort key
``event_id``, TTL attribute ``expires_at``), read with BatchGetItem (100 keys a call) and written with
BatchWriteItem (25 items a call), unprocessed keys and items retried. The item records the destinations the
event reached, so an event that reached one destination and failed the other is retried for the other only.

Powertools idempotency is not used: it writes twice per record (in progress, then completed) with single
item calls, which would cost more AWS calls per event than the whole process budget (0.3).

>>> delivered = DeliveredEvents(dynamodb, "anfang-330106-delivered", ttl_secs=7 * 86400)
>>> seen = delivered.seen([("33010600001320000001", "019ace01-...")])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from anfang.aws.dynamo import GET_KEYS_PER_CALL, WRITE_ITEMS_PER_CALL, UnprocessedError, batch_get, batch_write
from anfang.contracts.types import EventKey

__all__ = ["GET_KEYS_PER_CALL", "WRITE_ITEMS_PER_CALL", "DedupeError", "DeliveredEvents", "EventKey"]


class DedupeError(Exception):
    """The delivered-events table did not answer for every key after retries."""

    code = "dedupe_unavailable"


class DeliveredEvents:
    """The delivered-events table, with batched reads and writes."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        *,
        ttl_secs: int,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = dynamodb
        self._table = table
        self._ttl_secs = ttl_secs
        self._clock = clock
        self._sleep = sleep

    def seen(self, keys: Iterable[EventKey]) -> dict[EventKey, frozenset[str]]:
        """The destinations each already-delivered key reached (keys never delivered are absent)."""
        unique = list(dict.fromkeys(keys))
        try:
            items = batch_get(
                self._db,
                self._table,
                [{"device_id": {"S": d}, "event_id": {"S": e}} for d, e in unique],
                projection="device_id, event_id, destinations",
                consistent=True,
                sleep=self._sleep,
            )
        except UnprocessedError as exc:
            raise DedupeError("delivered-events table left keys unprocessed") from exc
        return {
            (item["device_id"]["S"], item["event_id"]["S"]): frozenset(item.get("destinations", {}).get("SS", []))
            for item in items
        }

    def mark(self, delivered: Mapping[EventKey, Iterable[str]]) -> None:
        """Record the destinations each key has reached (the full set: items are overwritten)."""
        expires_at = str(int(self._clock()) + self._ttl_secs)
        items = [
            {
                "PutRequest": {
                    "Item": {
                        "device_id": {"S": device_id},
                        "event_id": {"S": event_id},
                        "destinations": {"SS": sorted(set(destinations))},
                        "expires_at": {"N": expires_at},
                    }
                }
            }
            for (device_id, event_id), destinations in delivered.items()
            if destinations
        ]
        try:
            batch_write(self._db, self._table, items, sleep=self._sleep)
        except UnprocessedError as exc:
            raise DedupeError("delivered-events table left items unprocessed") from exc
