"""Two changes to moto for long local runs: DynamoDB transactions and SQS calls whose cost does not grow with
the table or the queue.

moto backs up every table a ``TransactWriteItems`` names with ``copy.deepcopy`` of the whole table (about 12 µs per
item), so that it can put the table back if the transaction is cancelled. The API writes seen events and the
process function the release log in a transaction each, so in a soak every transaction gets slower as those
tables fill: half an hour of load becomes quadratic, and the emulator, not our code, sets the throughput. On
AWS a transaction's cost does not depend on the table's size.

:func:`install` keeps moto's transaction code and its rollback, and changes only what is backed up: the items
the transaction names (deep copies, taken before it runs), restored if it fails; the whole-table copy becomes
the table itself for the duration of the call (a thread-local flag, so any other deep copy of a table, in another
thread or outside a transaction, is a real one).

SQS: ``ReceiveMessage`` checks each candidate message's retention period through ``get_queue_attributes``, which
counts every message of the queue (visible, in flight, delayed) to build all the attributes; ``SendMessage``
builds them all too, to read one. With a backlog of a few thousand messages each call costs milliseconds per
message. The retention check reads the queue's retention period directly (the same comparison), and inside
``SendMessage`` the attributes are those of a queue's identity (FIFO settings), not its counts. What
``GetQueueAttributes`` answers is unchanged.

The local stack installs both; moto's behaviour is unchanged for everything else.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

__all__ = ["install"]

_local = threading.local()
_installed = False


def _table_deepcopy(self: Any, memo: dict[int, Any]) -> Any:
    if getattr(_local, "in_transaction", False):
        return self  # the items the transaction touches are backed up by _transact_write_items
    # what copy.deepcopy does for an object without __deepcopy__
    return copy._reconstruct(self, memo, *self.__reduce_ex__(4))  # type: ignore[attr-defined]


def _key_of(table: Any, op: dict[str, Any]) -> tuple[Any, Any] | None:
    from moto.dynamodb.models.dynamo_type import DynamoType  # noqa: PLC0415

    attrs = op.get("Key") or op.get("Item") or {}
    if table.hash_key_attr not in attrs:
        return None  # moto refuses it itself
    hash_key = DynamoType(attrs[table.hash_key_attr])
    range_key = None
    if table.range_key_attr is not None:
        if table.range_key_attr not in attrs:
            return None
        range_key = DynamoType(attrs[table.range_key_attr])
    return hash_key, range_key


def install() -> None:
    """Patch moto's DynamoDB backend in this process (idempotent)."""
    global _installed  # noqa: PLW0603 - a process-wide patch is installed once
    if _installed:
        return
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415
    from moto.dynamodb.models.table import Table  # noqa: PLC0415

    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        undo: list[tuple[Any, Any, Any, Any]] = []
        for entry in transact_items:
            op: Any = next(iter(entry.values()), {})
            table = self.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            key = _key_of(table, op) if table is not None else None
            if table is not None and key is not None:
                old = table.get_item(*key) if key[1] is not None or not table.has_range_key else None
                undo.append((table, key[0], key[1], copy.deepcopy(old)))
        _local.in_transaction = True
        try:
            original(self, transact_items)
        except BaseException:
            for table, hash_key, range_key, old in reversed(undo):
                if range_key is None:
                    if old is None:
                        table.items.pop(hash_key, None)
                    else:
                        table.items[hash_key] = old
                elif old is None:
                    table.items.get(hash_key, {}).pop(range_key, None)
                else:
                    table.items.setdefault(hash_key, {})[range_key] = old
            raise
        finally:
            _local.in_transaction = False

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    Table.__deepcopy__ = _table_deepcopy  # type: ignore[attr-defined]
    _patch_sqs()
    _installed = True


def _patch_sqs() -> None:
    from moto.core.utils import unix_time  # noqa: PLC0415
    from moto.sqs.models import Queue, SQSBackend  # noqa: PLC0415

    full_attributes = Queue.__dict__["attributes"].fget
    assert full_attributes is not None

    def attributes(self: Any) -> dict[str, Any]:
        if getattr(_local, "in_send", False):
            # all SendMessage reads of them: ContentBasedDeduplication (of a FIFO queue)
            return (
                {"ContentBasedDeduplication": str(self.content_based_deduplication).lower()} if self.fifo_queue else {}
            )
        return full_attributes(self)  # type: ignore[no-any-return]

    send_message = SQSBackend.send_message

    def send_message_light(self: Any, *args: Any, **kwargs: Any) -> Any:
        _local.in_send = True
        try:
            return send_message(self, *args, **kwargs)
        finally:
            _local.in_send = False

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > unix_time())

    Queue.attributes = property(attributes)  # type: ignore[method-assign,assignment]
    SQSBackend.send_message = send_message_light  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]
