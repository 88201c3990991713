"""Fan-out (sinks): batched SNS publishes to the destination topics that report which entries failed.

PublishBatch accepts 10 entries; an entry that fails (partially failed call or a raised client error) is
reported by its id so the caller can turn it into an SQS partial batch failure and let SQS retry it.
Sends to the analyse and process queues are ``anfang.aws.queues.EventQueue``.

>>> failed = publish_batch(sns, topic_arn, [Message(id="m1", body="{...}", attributes={"town": "330106"})])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from anfang.aws.dynamo import chunks

__all__ = ["BATCH_ENTRIES", "Message", "publish_batch"]

#: Entries per SendMessageBatch / PublishBatch call (the AWS maximum).
BATCH_ENTRIES: Final = 10


@dataclass(frozen=True)
class Message:
    """One message to send: ``id`` is unique within a call, ``attributes`` are SNS/SQS string attributes."""

    id: str
    body: str
    attributes: dict[str, str] = field(default_factory=dict)


def _attributes(attributes: dict[str, str]) -> dict[str, dict[str, str]]:
    return {name: {"DataType": "String", "StringValue": value} for name, value in attributes.items() if value}


def publish_batch(sns: Any, topic_arn: str, messages: Iterable[Message]) -> list[str]:
    """SNS PublishBatch in calls of 10; returns the ids of the messages that were not published."""
    failed: list[str] = []
    for part in chunks(list(messages), BATCH_ENTRIES):
        entries = [{"Id": m.id, "Message": m.body, "MessageAttributes": _attributes(m.attributes)} for m in part]
        try:
            response = sns.publish_batch(TopicArn=topic_arn, PublishBatchRequestEntries=entries)
        except (BotoCoreError, ClientError):
            failed.extend(m.id for m in part)
            continue
        failed.extend(entry["Id"] for entry in response.get("Failed", []))
    return failed
