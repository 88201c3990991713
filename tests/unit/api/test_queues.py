"""EventQueue against a stubbed SQS client (botocore Stubber: the AWS boundary, no network)."""

from __future__ import annotations

import boto3
from botocore.stub import ANY, Stubber

from anfang.aws.batch import Message, _parts
from anfang.aws.queues import EventQueue

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/anfang-test-process"


def _client() -> object:
    return boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_batches_of_ten_and_partial_failures_are_reported_by_key() -> None:
    client = _client()
    messages = {f"event-{n:02d}": f'{{"n": {n}}}' for n in range(23)}
    with Stubber(client) as stub:
        stub.add_response(
            "send_message_batch",
            {"Successful": [], "Failed": [{"Id": "3", "SenderFault": False, "Code": "InternalError"}]},
            {"QueueUrl": URL, "Entries": ANY},
        )
        stub.add_client_error("send_message_batch", service_error_code="ServiceUnavailable", http_status_code=503)
        stub.add_response("send_message_batch", {"Successful": [], "Failed": []}, {"QueueUrl": URL, "Entries": ANY})
        failed = EventQueue(client, URL).send(messages)
        stub.assert_no_pending_responses()
    assert failed == {"event-03"} | {f"event-{n:02d}" for n in range(10, 20)}


def test_batches_respect_the_payload_limit() -> None:
    big = "x" * (100 * 1024)
    batches = list(_parts([Message(f"e{n}", big) for n in range(5)]))
    assert [len(batch) for batch in batches] == [2, 2, 1]
