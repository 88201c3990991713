"""Per-key request budget of the ingest API: a fixed window per key id, counted in DynamoDB, spent only by
requests whose signature holds.

Where it sits: it wraps the verifier's nonce store (``NonceStore.remember`` is called exactly once per request,
after the signature verified and before anything is stored), so

- an unsigned, malformed, stale or forged request is refused by the verifier before the budget is looked at:
  a flood of them, even one naming a real key id, cannot spend a signed device's budget;
- a replayed request is refused by the nonce store before it is counted, so a captured request replayed
  cannot spend it either;
- a key over its budget is answered ``429 rate_limited`` with ``Retry-After`` (seconds to the next window), and
  the container remembers that until the window ends, so a noisy device's further requests in that window
  cost no AWS call at all.

Why our own: the budget must be global (Lambda spreads one device's requests over every warm container, so an
in-container token bucket would give a key ``containers x rate``), and the well-kept limiter libraries
(``limits``, ``pyrate-limiter``) keep counters in memory, Redis, Memcached, MongoDB or SQL, not DynamoDB. One
conditional ``UpdateItem ADD`` on the nonce table (item ``rate#<key id>#<window start>``, TTL) is the whole
counter; API Gateway usage plans would need an API key per device on top of its signing key.

AWS calls: one ``UpdateItem`` per request that passed the nonce check; none for a key blocked in this container.

>>> nonces = KeyRateLimiter(DynamoNonceStore(ddb, table), ddb, table, limit=100, window_secs=10)
>>> verifier = Verifier(registry, nonces)       # raises RateLimitedError from verify() past 100 per 10 s
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from botocore.exceptions import ClientError

from anfang.contracts.problems import ContractError, ErrorCode
from anfang.contracts.signing import NonceStore

__all__ = ["KeyRateLimiter", "RateLimitedError"]

COUNTER_PREFIX: Final = "rate#"
_THROTTLED: Final = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"})


class RateLimitedError(ContractError):
    """A key spent its budget for this window; ``retry_after_secs`` is when the next window starts."""

    def __init__(self, retry_after_secs: int) -> None:
        super().__init__(
            f"this key sent more requests than its budget; retry after {retry_after_secs} s",
            code=ErrorCode.RATE_LIMITED,
        )
        self.retry_after_secs = retry_after_secs


class KeyRateLimiter:
    """A ``NonceStore`` that also counts each key's requests per fixed window; see the module docstring.

    ``limit`` 0 switches the budget off (the nonce store alone).
    """

    def __init__(
        self,
        nonces: NonceStore,
        client: Any,
        table_name: str,
        *,
        limit: int,
        window_secs: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 0 or window_secs < 1:
            raise ValueError("limit must be >= 0 and window_secs >= 1")
        self._nonces = nonces
        self._client = client
        self._table = table_name
        self.limit = limit
        self.window_secs = window_secs
        self._clock = clock
        self._blocked: dict[str, float] = {}  # key id -> end of the window it spent
        self._lock = threading.Lock()

    def remember(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        """Refuse a key blocked in this window, record the nonce, then count the request against the key."""
        if not self.limit:
            return self._nonces.remember(key_id, nonce, ttl_seconds)
        now = self._clock()
        with self._lock:
            until = self._blocked.get(key_id)
            if until is not None and until <= now:
                del self._blocked[key_id]
                until = None
        if until is not None:
            raise RateLimitedError(max(1, math.ceil(until - now)))
        if not self._nonces.remember(key_id, nonce, ttl_seconds):
            return False  # a replay: refused by the verifier, never counted
        window_start = int(now // self.window_secs) * self.window_secs
        window_end = window_start + self.window_secs
        if self._count(key_id, window_start, window_end) > self.limit:
            with self._lock:
                self._blocked[key_id] = window_end
            raise RateLimitedError(max(1, math.ceil(window_end - now)))
        return True

    def _count(self, key_id: str, window_start: int, window_end: int) -> int:
        """The key's requests in this window, this one included (DynamoDB throttling on it counts as over)."""
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"{COUNTER_PREFIX}{key_id}#{window_start}"}},
                UpdateExpression="ADD #n :one SET expires_at = if_not_exists(expires_at, :expires)",
                ExpressionAttributeNames={"#n": "requests"},
                ExpressionAttributeValues={":one": {"N": "1"}, ":expires": {"N": str(window_end + 60)}},
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _THROTTLED:
                return self.limit + 1  # only a very hot key makes its own counter item throttle
            raise
        return int(answer["Attributes"]["requests"]["N"])
