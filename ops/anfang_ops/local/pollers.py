"""Event sources of the local stack: SQS event source mappings, S3 notifications and schedules, run as threads.

They give the in-process functions the events Lambda would: SQS batches of the template's batch size and
batching window, partial batch responses honoured (only successful messages are deleted; a failed one
becomes visible again after ``retry_delay_secs`` and reaches the dead-letter queue after the queue's
``maxReceiveCount``, which moto applies), and S3 ``ObjectCreated`` notifications invoked asynchronously
with the template's retry count and on-failure destination. A schedule (EventBridge ``rate(...)``) invokes its
function with a Scheduled Event every ``interval_secs``: the template's period, or a shorter one the local stack
chooses so a demo sees silent devices within minutes rather than after the town's five.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .deploy import LocalFunction, QueueTrigger, S3Trigger, ScheduleTrigger
from .runtime import LambdaContext, WorkerLost

__all__ = ["S3Poller", "ScheduleRunner", "SqsPoller", "StageTiming"]

logger = logging.getLogger("anfang_ops.local")
Handler = Callable[[dict[str, Any], Any], Any]


@dataclass(frozen=True, slots=True)
class StageTiming:
    """Where one message's time went in one function: waiting on its queue, then being handled.

    ``key`` is (device_id, event_id) when the body is a queued event (the pipeline's queues), else None.
    """

    function: str
    key: tuple[str, str] | None
    queued_secs: float  # from SQS's SentTimestamp to the start of the invocation
    run_secs: float  # the invocation that handled it (its whole batch)
    ok: bool


def _key_of(body: str) -> tuple[str, str] | None:
    try:
        doc = json.loads(body)
        return (str(doc["device_id"]), str(doc["event_id"]))
    except (ValueError, KeyError, TypeError):
        return None


class SqsPoller(threading.Thread):
    """One SQS event source mapping."""

    def __init__(
        self,
        sqs: Any,
        function: LocalFunction,
        handler: Handler,
        trigger: QueueTrigger,
        region: str,
        stop: threading.Event,
        *,
        retry_delay_secs: int = 1,
        timings: list[StageTiming] | None = None,
    ) -> None:
        super().__init__(name=f"sqs-{function.name}", daemon=True)
        self.timings = timings
        self.sqs = sqs
        self.function = function
        self.handler = handler
        self.trigger = trigger
        self.region = region
        self.stop_event = stop
        self.retry_delay_secs = retry_delay_secs
        self.invocations = 0
        self.failed_items = 0
        self.lost_batches = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                messages = self._collect()
                if messages:
                    self._invoke(messages)
            except Exception:  # the poller must outlive any one bad batch, as Lambda's does
                logger.exception("poller %s failed a round", self.name)
                self.stop_event.wait(1)

    def _collect(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.trigger.batching_window_secs
        while len(messages) < self.trigger.batch_size and not self.stop_event.is_set():
            answer = self.sqs.receive_message(
                QueueUrl=self.trigger.queue_url,
                MaxNumberOfMessages=min(10, self.trigger.batch_size - len(messages)),
                WaitTimeSeconds=0 if messages else 1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            batch = answer.get("Messages", [])
            messages.extend(batch)
            if not batch or time.monotonic() >= deadline:
                break
        return messages

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        }
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": attributes,
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self.trigger.queue_arn,
            "awsRegion": self.region,
        }

    def _invoke(self, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._record(m) for m in messages]}
        self.invocations += 1
        started = time.time()
        try:
            response = self.handler(event, LambdaContext(self.function, self.region))
        except WorkerLost:
            # the container died: as on Lambda, the batch is neither deleted nor made visible early; SQS gives
            # it back after the queue's visibility timeout
            logger.warning(
                "%s lost its worker mid-batch; %d messages return after the visibility timeout",
                self.function.name,
                len(messages),
            )
            self.lost_batches += 1
            self._time(messages, started, {m["MessageId"] for m in messages})
            return
        except Exception:
            logger.exception("%s raised; the whole batch will be retried", self.function.name)
            failed = {m["MessageId"] for m in messages}
        else:
            failed = set()
            if self.trigger.report_batch_item_failures and isinstance(response, dict):
                failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        self.failed_items += len(failed)
        self._time(messages, started, failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self.sqs.delete_message_batch(
                QueueUrl=self.trigger.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        retry = [m for m in messages if m["MessageId"] in failed]
        for start in range(0, len(retry), 10):
            chunk = retry[start : start + 10]
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.trigger.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": self.retry_delay_secs}
                    for i, m in enumerate(chunk)
                ],
            )

    def _time(self, messages: list[dict[str, Any]], started: float, failed: set[str]) -> None:
        if self.timings is None:
            return
        ran = time.time() - started
        self.timings.extend(  # list.extend is atomic: pollers share the list
            StageTiming(
                self.function.name,
                _key_of(m["Body"]),
                max(0.0, started - int(m.get("Attributes", {}).get("SentTimestamp", started * 1000)) / 1000),
                ran,
                m["MessageId"] not in failed,
            )
            for m in messages
        )


class S3Poller(threading.Thread):
    """One S3 notification: new objects under the prefix invoke the function asynchronously."""

    def __init__(
        self,
        s3: Any,
        sqs: Any,
        function: LocalFunction,
        handler: Handler,
        trigger: S3Trigger,
        region: str,
        stop: threading.Event,
        *,
        interval_secs: float = 0.5,
    ) -> None:
        super().__init__(name=f"s3-{function.name}", daemon=True)
        self.s3 = s3
        self.sqs = sqs
        self.function = function
        self.handler = handler
        self.trigger = trigger
        self.region = region
        self.stop_event = stop
        self.interval_secs = interval_secs
        self.seen: set[tuple[str, str]] = set()
        self.invocations = 0

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_secs):
            try:
                for obj in self._new_objects():
                    self._invoke(obj)
            except Exception:
                logger.exception("poller %s failed a round", self.name)

    def _new_objects(self) -> list[dict[str, Any]]:
        found = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.trigger.bucket, Prefix=self.trigger.prefix):
            for obj in page.get("Contents", []):
                key = (obj["Key"], obj["ETag"])
                if key not in self.seen:
                    self.seen.add(key)
                    found.append(obj)
        return found

    def _event(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": self.region,
                    "eventTime": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "local",
                        "bucket": {"name": self.trigger.bucket, "arn": f"arn:aws:s3:::{self.trigger.bucket}"},
                        "object": {
                            "key": urllib.parse.quote_plus(obj["Key"], safe="/"),
                            "size": obj["Size"],
                            "eTag": obj["ETag"].strip('"'),
                            "sequencer": uuid.uuid4().hex[:16].upper(),
                        },
                    },
                }
            ]
        }

    def _invoke(self, obj: dict[str, Any]) -> None:
        event = self._event(obj)
        error: Exception | None = None
        for _attempt in range(1 + self.trigger.max_retry_attempts):
            self.invocations += 1
            try:
                self.handler(event, LambdaContext(self.function, self.region))
                return
            except Exception as exc:
                error = exc
                logger.exception("%s failed on %s", self.function.name, obj["Key"])
        if self.trigger.on_failure_queue_url and error is not None:
            record = {
                "version": "1.0",
                "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                "requestContext": {
                    "requestId": str(uuid.uuid4()),
                    "functionArn": f"arn:aws:lambda:{self.region}:123456789012:function:{self.function.name}",
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": 1 + self.trigger.max_retry_attempts,
                },
                "requestPayload": event,
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "responsePayload": {"errorType": type(error).__name__, "errorMessage": str(error)[:256]},
            }
            self.sqs.send_message(QueueUrl=self.trigger.on_failure_queue_url, MessageBody=json.dumps(record))


class ScheduleRunner(threading.Thread):
    """One schedule: the function is invoked every ``interval_secs`` (first after one interval), never twice at once."""

    def __init__(
        self,
        function: LocalFunction,
        handler: Handler,
        trigger: ScheduleTrigger,
        region: str,
        stop: threading.Event,
        *,
        interval_secs: float,
    ) -> None:
        super().__init__(name=f"schedule-{function.name}", daemon=True)
        self.function = function
        self.handler = handler
        self.trigger = trigger
        self.region = region
        self.stop_event = stop
        self.interval_secs = interval_secs
        self.invocations = 0
        self.errors = 0

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_secs):
            self.invoke()

    def invoke(self) -> Any:
        """One scheduled invocation now (also what ``anfang`` tests call to run a schedule at once)."""
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
            "resources": [],
            "detail": {},
        }
        self.invocations += 1
        try:
            return self.handler(event, LambdaContext(self.function, self.region))
        except Exception:
            # as on AWS: a failed scheduled run is logged; the next one comes at its time
            self.errors += 1
            logger.exception("%s raised on its schedule", self.function.name)
            return None
