"""When each device was last heard from, and which silences were reported (DynamoDB, one table).

Partition key ``device_id`` (S), sort key ``item`` (S), two kinds of item per device:

- ``seen``: ``last_seen_at`` (N, epoch seconds), written by the ingest API (:class:`LastSeenWriter`) with
  BatchWriteItem Puts, at most once per device per ``min_interval_secs`` per container;
- ``silence``: ``since`` (N, the last-seen time, or the registration time of a device never seen, that the
  reported silence started from), ``event_id`` (of the ``device_status`` record sent for it), ``reported_at``
  (N), written by the device watch after the record was published. A Put of one item kind never touches the
  other, so the API's writes cannot erase the watch's memory.

AWS calls: the writer makes at most one BatchWriteItem per request for up to 25 devices not written in the
last ``min_interval_secs`` (none when every device of the batch was written recently); the reader one Scan
(paginated) per run; :meth:`LastSeenTable.mark_reported` one BatchWriteItem per 25 silences.

>>> writer = LastSeenWriter(dynamodb, "anfang-370322-last-seen", min_interval_secs=60)
>>> writer.touch(["37032201001320000001"], at=1_764_500_000.0)
1
>>> LastSeenTable(dynamodb, "anfang-370322-last-seen").read()["37032201001320000001"].last_seen_at
1764500000
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from anfang.aws.dynamo import batch_write

__all__ = ["DeviceActivity", "LastSeenTable", "LastSeenWriter", "Silence"]

SEEN: Final = "seen"
SILENCE: Final = "silence"
_MAX_REMEMBERED: Final = 100_000  # devices a container remembers writing; a town has a few thousand


@dataclass(frozen=True, slots=True)
class Silence:
    """A silence the watch reported: from when, and the event id of its ``device_status`` record."""

    since: int
    event_id: str
    reported_at: int


@dataclass(frozen=True, slots=True)
class DeviceActivity:
    """What the table knows about one device."""

    last_seen_at: int | None = None
    silence: Silence | None = None


class LastSeenWriter:
    """The API's side: record that devices were heard from, throttled per container.

    ``touch`` writes only the devices this container has not written in the last ``min_interval_secs``, so a
    busy gateway costs one BatchWriteItem per interval, not one per request. A failed write raises (the caller
    decides; ingest logs and counts it) and leaves those devices unthrottled, so the next request tries again.
    """

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        min_interval_secs: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table_name
        self._interval = min_interval_secs
        self._sleep = sleep
        self._written: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, device_ids: Iterable[str], *, at: float) -> list[str]:
        """The devices among ``device_ids`` whose last write from this container is older than the interval."""
        with self._lock:
            return sorted({d for d in device_ids if at - self._written.get(d, float("-inf")) >= self._interval})

    def touch(self, device_ids: Iterable[str], *, at: float) -> int:
        """Record ``at`` (epoch seconds) as the last-seen time of the devices that are due; how many were written."""
        due = self.due(device_ids, at=at)
        if not due:
            return 0
        seconds = {"N": str(int(at))}
        requests = [
            {"PutRequest": {"Item": {"device_id": {"S": d}, "item": {"S": SEEN}, "last_seen_at": seconds}}} for d in due
        ]
        batch_write(self._client, self._table, requests, sleep=self._sleep)
        with self._lock:
            if len(self._written) > _MAX_REMEMBERED:
                self._written.clear()
            self._written.update(dict.fromkeys(due, at))
        return len(due)


class LastSeenTable:
    """The device watch's and the CLI's side: read everything, remember reported silences."""

    def __init__(self, client: Any, table_name: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self._table = table_name
        self._sleep = sleep

    def read(self) -> dict[str, DeviceActivity]:
        """Every device's last-seen time and reported silence (one Scan, paginated)."""
        seen: dict[str, int] = {}
        silences: dict[str, Silence] = {}
        kwargs: dict[str, Any] = {"TableName": self._table}
        while True:
            page = self._client.scan(**kwargs)
            for item in page.get("Items", []):
                device_id, kind = item["device_id"]["S"], item["item"]["S"]
                if kind == SEEN:
                    seen[device_id] = int(item["last_seen_at"]["N"])
                elif kind == SILENCE:
                    silences[device_id] = Silence(
                        since=int(item["since"]["N"]),
                        event_id=item["event_id"]["S"],
                        reported_at=int(item["reported_at"]["N"]),
                    )
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return {
            device_id: DeviceActivity(last_seen_at=seen.get(device_id), silence=silences.get(device_id))
            for device_id in sorted(seen.keys() | silences.keys())
        }

    def mark_reported(self, silences: Mapping[str, Silence]) -> None:
        """Remember the silences whose records were published, so the next run does not send them again."""
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "device_id": {"S": device_id},
                        "item": {"S": SILENCE},
                        "since": {"N": str(silence.since)},
                        "event_id": {"S": silence.event_id},
                        "reported_at": {"N": str(silence.reported_at)},
                    }
                }
            }
            for device_id, silence in sorted(silences.items())
        ]
        if requests:
            batch_write(self._client, self._table, requests, sleep=self._sleep)
