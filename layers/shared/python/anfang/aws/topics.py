"""The destination topics (SNS): records published through :func:`anfang.aws.batch.send_batches`.

An entry that fails (partially failed call or a raised client error) is reported by its id so the caller can
turn it into an SQS partial batch failure and let SQS retry it. AWS calls: one ``PublishBatch`` per 10 records.

>>> failed = publish_batch(sns, topic_arn, [Message("m1", "{...}", string_attributes({"town": "330106"}))])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anfang.aws.batch import Message, send_batches, sns_sender

__all__ = ["publish_batch"]


def publish_batch(sns: Any, topic_arn: str, messages: Sequence[Message]) -> list[str]:
    """SNS PublishBatch in calls of 10; returns the ids of the messages that were not published."""
    return send_batches(sns_sender(sns, topic_arn), messages)
