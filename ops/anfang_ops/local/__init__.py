"""The local stack (``anfang local up``): template.yaml on a moto server, functions in-process, API over HTTP."""

from .deploy import DeployedStack, LocalFunction, QueueTrigger, S3Trigger, deploy_stack
from .stack import LocalStack, StackInfo

__all__ = ["DeployedStack", "LocalFunction", "LocalStack", "QueueTrigger", "S3Trigger", "StackInfo", "deploy_stack"]
