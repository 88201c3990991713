"""The health-code table (docs/api.md, "Health codes"): person records, snapshot lines, the snapshot pointer.

Health-code table: partition key ``person_key`` (S); ``status`` (S: green/yellow/red), ``updated_at``
(S, RFC 3339 UTC), ``source_version`` (S: ``delta:<unix seconds of the signed request>`` or
``snapshot:<snapshot_id>``), ``order_key`` (S, :func:`order_key`), TTL attribute ``expires_at`` (N, Unix
seconds). Build items with :func:`health_code_item`, read them with :meth:`HealthCodeTable.get`.

Codes only move forward: a record is written only if it is newer than the stored one (a conditional Put on
``order_key``: ``updated_at`` in microseconds, then on a tie the more severe status, then the larger
``source_version``), so a retried or reordered delivery (red@10:00 after green@08:00, in either order)
always leaves red@10:00, and the stored record is the same whatever the order of arrival. Three kinds of
item share the table:

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
AWS calls: BatchGetItem per 100 keys; a conditional PutItem per delta (:meth:`HealthCodeTable.put_many`);
for snapshot lines, whose keys have one writer, BatchGetItem per 100 and BatchWriteItem per 25 of the newer
(:meth:`HealthCodeTable.put_single_writer`); a Scan per page and BatchWriteItem per 25 deletes on purge.

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

from botocore.exceptions import ClientError

from anfang.aws.dynamo import WRITE_ITEMS_PER_CALL, batch_get, batch_write, chunks
from anfang.contracts.types import HealthCodeStatus

__all__ = [
    "CURRENT_SNAPSHOT_KEY",
    "HEALTH_CODE_TTL_ATTRIBUTE",
    "CurrentSnapshot",
    "HealthCodeRecord",
    "HealthCodeTable",
    "health_code_item",
    "order_key",
    "snapshot_record_key",
]

HEALTH_CODE_TTL_ATTRIBUTE: Final = "expires_at"
#: The item holding the pointer to the authoritative snapshot (never a person key: those are 64 hex digits).
CURRENT_SNAPSHOT_KEY: Final = "snapshot#current"
#: On equal ``updated_at`` the more severe status wins: deterministic, and on the safe side.
_SEVERITY: Final[dict[str, int]] = {"green": 0, "yellow": 1, "red": 2}
#: Put only what is newer than the stored record (items written before order_key existed count as older).
_NEWER: Final = "attribute_not_exists(person_key) OR attribute_not_exists(order_key) OR order_key < :order"


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


def order_key(record: HealthCodeRecord) -> str:
    """The total order of a person's records, as a string DynamoDB compares: ``updated_at`` (microseconds),
    then status severity (red > yellow > green), then ``source_version``. Newer is greater."""
    return f"{max(0, _micros(record.updated_at)):020d}#{_SEVERITY[record.status]}#{record.source_version}"


def _newest(records: Iterable[HealthCodeRecord]) -> dict[str, tuple[str, HealthCodeRecord]]:
    """Each key's newest record by :func:`order_key`, with its order key."""
    newest: dict[str, tuple[str, HealthCodeRecord]] = {}
    for record in records:
        order = order_key(record)
        known = newest.get(record.person_key)
        if known is None or order > known[0]:
            newest[record.person_key] = (order, record)
    return newest


def health_code_item(record: HealthCodeRecord, *, expires_at: int) -> dict[str, Any]:
    """The DynamoDB item (low-level attribute values) of a health-code record."""
    return {
        "person_key": {"S": record.person_key},
        "status": {"S": record.status},
        "updated_at": {"S": record.updated_at.astimezone(UTC).isoformat()},
        "source_version": {"S": record.source_version},
        "order_key": {"S": order_key(record)},
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
        """Write each person's newest record if it is newer than the stored one; the number written.

        For records any number of writers send at once (deltas: every API container): one conditional
        ``PutItem`` per record (in parallel when an executor is given), so the stored record is the newest by
        :func:`order_key` whatever the order in which records arrive, within a call or across calls.
        (``TransactWriteItems`` would take 100 conditional Puts a call, at twice the write units; a cancelled
        transaction must be resubmitted without its stale records, and moto copies the whole table per item.)
        """
        newest = _newest(records)
        expires = int(self._clock()) + self._ttl_secs
        items = [(order, health_code_item(record, expires_at=expires)) for order, record in newest.values()]
        if self._executor is not None and len(items) > 1:
            return sum(self._executor.map(self._put_if_newer, items))
        return sum(self._put_if_newer(item) for item in items)

    def _put_if_newer(self, entry: tuple[str, dict[str, Any]]) -> int:
        order, item = entry
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression=_NEWER,
                ExpressionAttributeValues={":order": {"S": order}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return 0  # the stored record is as new or newer: codes only move forward
            raise
        return 1

    def put_single_writer(self, records: Sequence[HealthCodeRecord]) -> int:
        """:meth:`put_many` for keys only one writer at a time ever writes (snapshot lines: the import function
        runs with reserved concurrency 1); the number written.

        Reads the stored ``order_key`` of the records' keys (BatchGetItem, 100 a call) and writes only the newer
        records with BatchWriteItem (25 a call): 5 calls per 100 records instead of 100 conditional Puts. With
        one writer nothing can change between the read and the write.
        """
        newest = _newest(records)
        stored = self.get_many(newest)
        expires = int(self._clock()) + self._ttl_secs
        requests = [
            {"PutRequest": {"Item": health_code_item(record, expires_at=expires)}}
            for key, (order, record) in newest.items()
            if key not in stored or stored[key].get("order_key", {}).get("S", "") < order
        ]
        self._write_all(requests)
        return len(requests)

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
