"""The analyse and process queues (SQS): SendMessageBatch, 10 entries a call, partial failures reported.

A sink acknowledges only what was delivered: :meth:`EventQueue.send` returns the ids of the messages SQS
did *not* take (an entry in ``Failed``, or every entry of a call that raised), so the caller never answers
``accepted`` for an event that is not on a queue.

>>> queue = EventQueue(sqs_client, "https://sqs.../anfang-330106-process")
>>> failed = queue.send({"019ace01-...": '{"schema": "anfang.queued.v1", ...}'})
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_ENTRIES", "EventQueue"]

MAX_BATCH_ENTRIES: Final = 10
#: SendMessageBatch payload limit (sum of bodies); kept at the classic 256 KiB so it holds in every region.
MAX_BATCH_BYTES: Final = 256 * 1024

_log = logging.getLogger(__name__)


class EventQueue:
    """One SQS queue that takes queued-event messages (JSON text), keyed by event id."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self.queue_url = queue_url

    def send(self, messages: Mapping[str, str]) -> set[str]:
        """Send every message; return the keys of those that are NOT on the queue."""
        failed: set[str] = set()
        for batch in self._batches(messages):
            entries = [{"Id": str(n), "MessageBody": body} for n, (_, body) in enumerate(batch)]
            try:
                answer = self._client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                _log.warning("SendMessageBatch failed for %d messages: %s", len(batch), type(exc).__name__)
                failed.update(key for key, _ in batch)
                continue
            for entry in answer.get("Failed", []):
                failed.add(batch[int(entry["Id"])][0])
        return failed

    @staticmethod
    def _batches(messages: Mapping[str, str]) -> list[list[tuple[str, str]]]:
        batches: list[list[tuple[str, str]]] = []
        current: list[tuple[str, str]] = []
        size = 0
        for key, body in messages.items():
            length = len(body.encode("utf-8"))
            if current and (len(current) == MAX_BATCH_ENTRIES or size + length > MAX_BATCH_BYTES):
                batches.append(current)
                current, size = [], 0
            current.append((key, body))
            size += length
        if current:
            batches.append(current)
        return batches
