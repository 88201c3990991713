"""The local stack's moto patch: DynamoDB transactions keep moto's all-or-nothing behaviour while backing up only
the items they name (instead of a deep copy of every table they touch)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from anfang_ops.local import moto_patches


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    moto_patches.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="cn-north-1")
        for name, keys in (("pairs", ("device_id", "event_id")), ("single", ("pk",))):
            client.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in zip(keys, ("HASH", "RANGE"), strict=False)],
                AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
                BillingMode="PAY_PER_REQUEST",
            )
        yield client


def _items(client: Any, table: str) -> list[dict[str, Any]]:
    return sorted(client.scan(TableName=table)["Items"], key=str)


def test_a_cancelled_transaction_leaves_every_table_as_it_was(dynamodb: Any) -> None:
    dynamodb.put_item(TableName="pairs", Item={"device_id": {"S": "d"}, "event_id": {"S": "1"}, "n": {"N": "1"}})
    dynamodb.put_item(TableName="single", Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    dynamodb.put_item(TableName="single", Item={"pk": {"S": "b"}})
    before = (_items(dynamodb, "pairs"), _items(dynamodb, "single"))
    with pytest.raises(ClientError, match="TransactionCanceled"):
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "pairs", "Item": {"device_id": {"S": "d"}, "event_id": {"S": "2"}}}},
                {
                    "Update": {
                        "TableName": "single",
                        "Key": {"pk": {"S": "a"}},
                        "UpdateExpression": "SET n = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                    }
                },
                {"Delete": {"TableName": "pairs", "Key": {"device_id": {"S": "d"}, "event_id": {"S": "1"}}}},
                {
                    "Put": {  # fails: the item exists
                        "TableName": "single",
                        "Item": {"pk": {"S": "b"}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
    assert (_items(dynamodb, "pairs"), _items(dynamodb, "single")) == before


def test_a_transaction_that_succeeds_applies_all_of_it(dynamodb: Any) -> None:
    dynamodb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": "pairs", "Item": {"device_id": {"S": "d"}, "event_id": {"S": "9"}}}},
            {
                "Put": {
                    "TableName": "single",
                    "Item": {"pk": {"S": "z"}},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
    )
    assert len(_items(dynamodb, "pairs")) == 1 and len(_items(dynamodb, "single")) == 1


def test_a_deep_copy_of_a_table_outside_a_transaction_is_still_a_copy(dynamodb: Any) -> None:
    import copy

    from moto.dynamodb.models import dynamodb_backends

    dynamodb.put_item(TableName="single", Item={"pk": {"S": "a"}})
    table = dynamodb_backends["123456789012"]["cn-north-1"].tables["single"]
    clone = copy.deepcopy(table)
    assert clone is not table and clone.items is not table.items and len(clone.items) == 1


@pytest.fixture
def sqs() -> Iterator[Any]:
    moto_patches.install()
    with mock_aws():
        yield boto3.client("sqs", region_name="cn-north-1")


def test_sqs_still_counts_dedupes_and_expires_as_moto_does(sqs: Any) -> None:
    from moto.sqs.models import sqs_backends

    url = sqs.create_queue(QueueName="plain", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    fifo = sqs.create_queue(
        QueueName="ordered.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    )["QueueUrl"]
    for n in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{n}")
        sqs.send_message(QueueUrl=fifo, MessageBody="same body", MessageGroupId="g")  # deduplicated by content
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "5" and attributes["MessageRetentionPeriod"] == "60"
    assert sqs.get_queue_attributes(QueueUrl=fifo, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"] == {
        "ApproximateNumberOfMessages": "1"
    }
    # messages within the queue's retention period are received; older ones never are
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]) == 5
    for message in sqs_backends["123456789012"]["cn-north-1"].get_queue("plain")._messages:
        message.sent_timestamp -= 61_000
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
