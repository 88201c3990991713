"""Replay protection: the nonce store as a DynamoDB conditional put with TTL (implements ``NonceStore``).

Table: partition key ``pk`` (S) = ``<key_id>#<nonce>``, TTL attribute ``expires_at`` (Unix seconds).
DynamoDB deletes expired items lazily (up to days later), so the condition also accepts an item whose
``expires_at`` has passed: a nonce is refused exactly while it is remembered.

>>> nonces = DynamoNonceStore(dynamodb_client, "anfang-330106-nonces")
>>> verifier = Verifier(registry, nonces)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["NONCE_TTL_ATTRIBUTE", "DynamoNonceStore"]

NONCE_TTL_ATTRIBUTE: Final = "expires_at"


class DynamoNonceStore:
    """Remembers ``(key_id, nonce)`` pairs in DynamoDB: one conditional PutItem per request."""

    def __init__(self, client: Any, table_name: str, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock

    def remember(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        """Record the nonce; False when it is already recorded and not expired. AWS errors propagate."""
        now = int(self._clock())
        try:
            self._client.put_item(
                TableName=self._table,
                Item={"pk": {"S": f"{key_id}#{nonce}"}, NONCE_TTL_ATTRIBUTE: {"N": str(now + ttl_seconds)}},
                ConditionExpression="attribute_not_exists(pk) OR #e < :now",
                ExpressionAttributeNames={"#e": NONCE_TTL_ATTRIBUTE},
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True
