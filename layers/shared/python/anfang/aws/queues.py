"""The analyse and process queues (SQS): queued-event messages sent through :func:`anfang.aws.batch.send_batches`.

A sink acknowledges only what was delivered: :meth:`EventQueue.send` returns the keys of the messages SQS
did *not* take, so the caller never answers ``accepted`` for an event that is not on a queue. AWS calls: one
``SendMessageBatch`` per 10 messages.

>>> queue = EventQueue(sqs_client, "https://sqs.../anfang-330106-process")
>>> failed = queue.send({"019ace01-...": '{"schema": "anfang.queued.v1", ...}'})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anfang.aws.batch import Message, send_batches, sqs_sender

__all__ = ["EventQueue"]


class EventQueue:
    """One SQS queue that takes queued-event messages (JSON text), keyed by the caller's message key."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._send = sqs_sender(client, queue_url)
        self.queue_url = queue_url

    def send(self, messages: Mapping[str, str]) -> set[str]:
        """Send every message; return the keys of those that are NOT on the queue."""
        return set(send_batches(self._send, [Message(key, body) for key, body in messages.items()]))
