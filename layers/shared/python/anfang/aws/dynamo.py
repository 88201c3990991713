"""DynamoDB batch calls with the part botocore leaves to the caller.

botocore's retry modes retry a throttled *call*; a ``BatchGetItem`` or ``BatchWriteItem`` that succeeds with
``UnprocessedKeys`` / ``UnprocessedItems`` is the caller's to resubmit, with backoff (the DynamoDB
developer guide says so). boto3's ``Table.batch_writer`` does that for writes only, on the resource API
(which this code does not use: clients are injected low-level clients). Every adapter that batches calls
these two functions instead of its own loop.

>>> items = batch_get(client, "seen", [{"event_id": {"S": e}} for e in ids], projection="event_id")
>>> batch_write(client, "seen", [{"PutRequest": {"Item": item}} for item in items])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar

__all__ = ["GET_KEYS_PER_CALL", "WRITE_ITEMS_PER_CALL", "UnprocessedError", "batch_get", "batch_write", "chunks"]

GET_KEYS_PER_CALL: Final = 100
WRITE_ITEMS_PER_CALL: Final = 25
MAX_ROUNDS: Final = 6
T = TypeVar("T")


class UnprocessedError(RuntimeError):
    """DynamoDB still left keys or items unprocessed after every retry."""


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _backoff(attempt: int) -> float:
    return min(0.05 * 2.0**attempt, 1.0)


def batch_get(
    client: Any,
    table: str,
    keys: Sequence[dict[str, Any]],
    *,
    projection: str | None = None,
    consistent: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Every item found for ``keys`` (100 keys a call, unprocessed keys resubmitted); absent keys give nothing."""
    found: list[dict[str, Any]] = []
    for part in chunks(keys, GET_KEYS_PER_CALL):
        spec: dict[str, Any] = {"Keys": list(part)}
        if projection is not None:
            spec["ProjectionExpression"] = projection
        if consistent:
            spec["ConsistentRead"] = True
        request: dict[str, Any] = {table: spec}
        for attempt in range(MAX_ROUNDS):
            answer = client.batch_get_item(RequestItems=request)
            found.extend(answer.get("Responses", {}).get(table, []))
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
            sleep(_backoff(attempt))
        else:
            raise UnprocessedError(f"{table}: keys left unprocessed after {MAX_ROUNDS} rounds")
    return found


def batch_write(
    client: Any, table: str, requests: Sequence[dict[str, Any]], *, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Put or delete requests (25 a call, unprocessed items resubmitted)."""
    for part in chunks(requests, WRITE_ITEMS_PER_CALL):
        request: dict[str, Any] = {table: list(part)}
        for attempt in range(MAX_ROUNDS):
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            if not request:
                break
            sleep(_backoff(attempt))
        else:
            raise UnprocessedError(f"{table}: items left unprocessed after {MAX_ROUNDS} rounds")
