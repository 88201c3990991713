"""What an AWS API call asks IAM for: the actions and resource ARNs its parameters name.

Most operations are authorised as the action of the same name on the resource they name. The exceptions
matter here: a batch or transaction is authorised per item (``TransactWriteItems`` with a ``Put`` needs
``dynamodb:PutItem``, ``PublishBatch`` needs ``sns:Publish``, ``DeleteObjects`` needs ``s3:DeleteObject`` per
key, ``ListObjectsV2`` needs ``s3:ListBucket`` on the bucket). An operation this table does not know is
returned as ``unmapped`` so the checker fails loudly instead of guessing.

>>> requests_of("sns", "PublishBatch", {"TopicArn": "arn:aws:sns:us-east-1:1:t"}, region="us-east-1", account="1")
[('sns:Publish', 'arn:aws:sns:us-east-1:1:t')]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlparse

__all__ = ["UNMAPPED", "partition_of", "requests_of"]

UNMAPPED: Final = "unmapped"

Params = dict[str, Any]
Request = tuple[str, str]


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


class _Arns:
    def __init__(self, region: str, account: str) -> None:
        self.region, self.account, self.partition = region, account, partition_of(region)

    def table(self, name: str) -> str:
        if name.startswith("arn:"):
            return name
        return f"arn:{self.partition}:dynamodb:{self.region}:{self.account}:table/{name}"

    def queue(self, url: str) -> str:
        parts = urlparse(url).path.strip("/").split("/")
        return f"arn:{self.partition}:sqs:{self.region}:{parts[-2]}:{parts[-1]}"

    def bucket(self, name: str, key: str | None = None) -> str:
        arn = f"arn:{self.partition}:s3:::{name}"
        return arn if key is None else f"{arn}/{key}"

    def key(self, key_id: str) -> str:
        if key_id.startswith("arn:"):
            return key_id
        if key_id.startswith("alias/"):
            return f"arn:{self.partition}:kms:{self.region}:{self.account}:{key_id}"
        return f"arn:{self.partition}:kms:{self.region}:{self.account}:key/{key_id}"

    def secret(self, secret_id: str) -> str:
        if secret_id.startswith("arn:"):
            return secret_id
        return f"arn:{self.partition}:secretsmanager:{self.region}:{self.account}:secret:{secret_id}"


def _dynamodb(op: str, p: Params, arn: _Arns) -> list[Request]:
    if op in {"BatchGetItem", "BatchWriteItem"}:
        return [(f"dynamodb:{op}", arn.table(name)) for name in p.get("RequestItems", {})]
    if op in {"TransactWriteItems", "TransactGetItems"}:
        per_item = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}
        per_item |= {"ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}
        return [
            (f"dynamodb:{per_item[kind]}", arn.table(body["TableName"]))
            for item in p.get("TransactItems", [])
            for kind, body in item.items()
        ]
    table = arn.table(p["TableName"])
    if op in {"Query", "Scan"} and p.get("IndexName"):
        table = f"{table}/index/{p['IndexName']}"
    return [(f"dynamodb:{op}", table)]


def _s3(op: str, p: Params, arn: _Arns) -> list[Request]:
    bucket = p["Bucket"]
    if op in {"ListObjectsV2", "ListObjects"}:
        return [("s3:ListBucket", arn.bucket(bucket))]
    if op == "DeleteObjects":
        return [("s3:DeleteObject", arn.bucket(bucket, o["Key"])) for o in p.get("Delete", {}).get("Objects", [])]
    if op in {"GetObject", "HeadObject"} and p.get("VersionId"):
        return [("s3:GetObjectVersion", arn.bucket(bucket, p["Key"]))]
    if op == "HeadObject":
        return [("s3:GetObject", arn.bucket(bucket, p["Key"]))]
    if op in {"GetObject", "PutObject", "DeleteObject"}:
        return [(f"s3:{op}", arn.bucket(bucket, p["Key"]))]
    return [(UNMAPPED, f"s3:{op}")]


def _sqs(op: str, p: Params, arn: _Arns) -> list[Request]:
    batched = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage"}
    batched["ChangeMessageVisibilityBatch"] = "ChangeMessageVisibility"
    return [(f"sqs:{batched.get(op, op)}", arn.queue(p["QueueUrl"]))]


def _sns(op: str, p: Params, arn: _Arns) -> list[Request]:
    if op in {"Publish", "PublishBatch"}:
        return [("sns:Publish", p["TopicArn"])]
    return [(UNMAPPED, f"sns:{op}")]


def _kms(op: str, p: Params, arn: _Arns) -> list[Request]:
    # Decrypt may omit KeyId (the ciphertext names it): the recorder fills it in from the answer
    return [(f"kms:{op}", arn.key(p["KeyId"]) if p.get("KeyId") else "*")]


def _secretsmanager(op: str, p: Params, arn: _Arns) -> list[Request]:
    return [(f"secretsmanager:{op}", arn.secret(p["SecretId"]))]


_SERVICES: Final[dict[str, Callable[[str, Params, _Arns], list[Request]]]] = {
    "dynamodb": _dynamodb,
    "s3": _s3,
    "sqs": _sqs,
    "sns": _sns,
    "kms": _kms,
    "secretsmanager": _secretsmanager,
}


def requests_of(service: str, operation: str, params: Params, *, region: str, account: str) -> list[Request]:
    """The (IAM action, resource ARN) pairs one call needs; ``(UNMAPPED, "svc:Op")`` when not known here."""
    mapper = _SERVICES.get(service)
    if mapper is None:
        return [(UNMAPPED, f"{service}:{operation}")]
    try:
        return mapper(operation, params, _Arns(region, account))
    except (KeyError, IndexError):
        return [(UNMAPPED, f"{service}:{operation}")]
