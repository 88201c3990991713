"""A town stack's outputs, read through CloudFormation: the one way the CLI finds queues, tables and topics,
for a real stack and for the local one alike (``AWS_ENDPOINT_URL`` points boto3 at the local moto server)."""

from __future__ import annotations

from typing import Any, Final

from anfang.contracts.destinations import DESTINATION_INFO

__all__ = ["DLQ_OUTPUTS", "StackNotFoundError", "stack_outputs"]

#: ``anfang dlq redrive <queue>``: the dead-letter queue output and the queue its messages go back to.
DLQ_OUTPUTS: Final[dict[str, tuple[str, str]]] = {
    "analyse": ("AnalyseDeadLetterQueueUrl", "AnalyseQueueUrl"),
    "process": ("ProcessDeadLetterQueueUrl", "ProcessQueueUrl"),
    **{name: (info.dead_letter_output, info.queue_output) for name, info in DESTINATION_INFO.items()},
}


class StackNotFoundError(Exception):
    """No stack of that name (or no access to it)."""


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    """Every output of the stack, by output key."""
    from botocore.exceptions import ClientError  # noqa: PLC0415 - the CLI imports this lazily

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise StackNotFoundError(f"stack {stack_name} not found: {exc.response['Error']['Message']}") from exc
    if not stacks:
        raise StackNotFoundError(f"stack {stack_name} not found")
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
