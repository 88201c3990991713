"""The health-code table (docs/api.md, "Health codes"): person records, snapshot lines, the snapshot pointer.

Health-code table: partition key ``person_key`` (S); ``status`` (S: green/yellow/red), ``updated_at``
(S, RFC 3339 UTC), ``source_version`` (S: ``delta:<unix seconds of the signed request>`` or
``snapshot:<snapshot_id>``), TTL attribute ``expires_at`` (N, Unix seconds). Build items with
:func:`health_code_item`, read them with :meth:`HealthCodeTable.get`. Three kinds of item share the table:

- ``<person_key>``: the person's latest delta (``source_version = delta:...``), written by the API;
- ``<person_key>#<snapshot_id>``: the person's line of one imported snapshot (``snapshot:<snapshot_id>``),
  so a new import never overwrites what the authoritative snapshot says (:func:`snapshot_record_key`);
- ``snapshot#current``: the pointer to the authoritative snapshot, ``snapshot_id``, ``as_of`` (RFC 3339)
  and ``as_of_us`` (N, Unix microseconds, compared when the pointer moves); no TTL, purged with the rest.

Authority rule (what enrichment counts; :class:`anfang.health_codes.authority.CurrentHealthCodes` applies it):
the current snapshot's line of a person, and the person's delta only if its ``updated_at`` is after the
current snapshot's ``as_of`` (the snapshot's ``created_at``); with no snapshot imported yet, every delta. Of
the two the newer wins. A person absent from the current snapshot has only deltas newer than it; records of
older or failed snapshots are ignored and expire by TTL. A snapshot line counts ``as_of`` the snapshot (the
commission vouched for it then), or its own ``updated_at`` if later.

Person keys are made by :mod:`anfang.health_codes.keys`; snapshots by :mod:`anfang.health_codes.snapshots`.
AWS calls: BatchGetItem per 100 keys, BatchWriteItem per 25 records, a Scan per page on purge.

>>> pk = person_key(pepper, "11010519491231002x")   # same key as for "11010519491231002X"
>>> table = HealthCodeTable(dynamodb_client, "anfang-330106-health-codes")
>>> table.put_many([HealthCodeRecord(pk, "green", updated_at, "delta:1764405000")])
1
"""

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

from anfang.aws.dynamo import WRITE_ITEMS_PER_CALL, batch_get, batch_write, chunks
from anfang.contracts.types import HealthCodeStatus

__all__ = [
    "CURRENT_SNAPSHOT_KEY",
    "HEALTH_CODE_TTL_ATTRIBUTE",
    "CurrentSnapshot",
    "HealthCodeRecord",
    "HealthCodeTable",
    "health_code_item",
    "snapshot_record_key",
]

HEALTH_CODE_TTL_ATTRIBUTE: Final = "expires_at"
#: The item holding the pointer to the authoritative snapshot (never a person key: those are 64 hex digits).
CURRENT_SNAPSHOT_KEY: Final = "snapshot#current"


@dataclass(frozen=True, slots=True)
class HealthCodeRecord:
    person_key: str
    status: HealthCodeStatus
    updated_at: datetime
    source_version: str


@dataclass(frozen=True, slots=True)
class CurrentSnapshot:
    """The authoritative snapshot: its id and the time it speaks for (its ``created_at``)."""

    snapshot_id: str
    as_of: datetime


def snapshot_record_key(key: str, snapshot_id: str) -> str:
    """The table key of a person's line in one snapshot: ``<person_key>#<snapshot_id>``."""
    return f"{key}#{snapshot_id}"


def _micros(value: datetime) -> int:
    return int(value.timestamp()) * 1_000_000 + value.microsecond


def health_code_item(record: HealthCodeRecord, *, expires_at: int) -> dict[str, Any]:
    """The DynamoDB item (low-level attribute values) of a health-code record."""
    return {
        "person_key": {"S": record.person_key},
        "status": {"S": record.status},
        "updated_at": {"S": record.updated_at.astimezone(UTC).isoformat()},
        "source_version": {"S": record.source_version},
        HEALTH_CODE_TTL_ATTRIBUTE: {"N": str(expires_at)},
    }


class HealthCodeTable:
    """The health-code table (DynamoDB client injected); TTL ``ttl_days`` after each write."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        ttl_days: int = 30,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.table_name = table_name
        self._ttl_secs = ttl_days * 86_400
        self._executor = executor
        self._clock = clock

    def get(self, key: str) -> HealthCodeRecord | None:
        """The record of a person_key, or None (what enrichment reads)."""
        item = self._client.get_item(TableName=self.table_name, Key={"person_key": {"S": key}}).get("Item")
        if item is None:
            return None
        return HealthCodeRecord(
            person_key=key,
            status=cast(HealthCodeStatus, item["status"]["S"]),
            updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
            source_version=item["source_version"]["S"],
        )

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Items by key with BatchGetItem (100 keys a call, unprocessed keys retried); absent keys left out."""
        requested = [{"person_key": {"S": k}} for k in sorted(set(keys))]
        return {item["person_key"]["S"]: item for item in batch_get(self._client, self.table_name, requested)}

    def current_snapshot(self) -> CurrentSnapshot | None:
        """The pointer to the authoritative snapshot, or None when no snapshot was imported (or after a purge).

        Read with BatchGetItem, the only read the process function's role allows on this table.
        """
        item = self.get_many([CURRENT_SNAPSHOT_KEY]).get(CURRENT_SNAPSHOT_KEY)
        if item is None:
            return None
        return CurrentSnapshot(item["snapshot_id"]["S"], datetime.fromisoformat(item["as_of"]["S"]))

    def set_current_snapshot(self, snapshot: CurrentSnapshot) -> bool:
        """Make ``snapshot`` authoritative unless a newer one is; False when a newer snapshot is current."""
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"person_key": {"S": CURRENT_SNAPSHOT_KEY}},
                UpdateExpression="SET snapshot_id = :id, as_of = :as_of, as_of_us = :us, updated_at = :now",
                ConditionExpression="attribute_not_exists(person_key) OR as_of_us < :us OR snapshot_id = :id",
                ExpressionAttributeValues={
                    ":id": {"S": snapshot.snapshot_id},
                    ":as_of": {"S": snapshot.as_of.astimezone(UTC).isoformat()},
                    ":us": {"N": str(_micros(snapshot.as_of))},
                    ":now": {"S": datetime.fromtimestamp(self._clock(), UTC).isoformat()},
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def put_many(self, records: Sequence[HealthCodeRecord]) -> int:
        """Write records with BatchWriteItem (25 a call, in parallel when an executor is given); the count.

        Within one call the newest ``updated_at`` per person wins; across calls the last write wins.
        """
        newest: dict[str, HealthCodeRecord] = {}
        for record in records:
            known = newest.get(record.person_key)
            if known is None or record.updated_at >= known.updated_at:
                newest[record.person_key] = record
        expires = int(self._clock()) + self._ttl_secs
        items = [{"PutRequest": {"Item": health_code_item(r, expires_at=expires)}} for r in newest.values()]
        self._write_all(items)
        return len(newest)

    def purge(self) -> int:
        """Delete every record of the table (one town per stack); the number deleted."""
        deleted = 0
        kwargs: dict[str, Any] = {"TableName": self.table_name, "ProjectionExpression": "person_key"}
        while True:
            page = self._client.scan(**kwargs)
            keys = [{"DeleteRequest": {"Key": {"person_key": item["person_key"]}}} for item in page.get("Items", [])]
            self._write_all(keys)
            deleted += len(keys)
            if "LastEvaluatedKey" not in page:
                return deleted
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _write_all(self, requests: Sequence[dict[str, Any]]) -> None:
        parts = list(chunks(requests, WRITE_ITEMS_PER_CALL))
        if self._executor is not None and len(parts) > 1:
            list(self._executor.map(self._write_part, parts))
        else:
            for part in parts:
                self._write_part(part)

    def _write_part(self, part: Sequence[dict[str, Any]]) -> None:
        batch_write(self._client, self.table_name, part)
