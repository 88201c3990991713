"""The functions' roles out of the transformed template, resolved for one deployment, and calls checked against them.

``Roles`` reads each ``AWS::Lambda::Function``'s role after the SAM transform (so SAM's own statements, such
as an on-failure destination's ``sqs:SendMessage``, are there too) and resolves every ``Resource`` for a
deployment into the ARNs moto gave it: ``Ref``, ``Fn::GetAtt ... Arn``, ``Fn::Sub``, ``Fn::If`` (the template's
conditions evaluated with the deployment's parameters) and ``Fn::Join``.

Evaluation is IAM's for identity policies with only ``Allow`` statements: a request is allowed when some
statement's ``Action`` and ``Resource`` patterns (``*`` and ``?`` wildcards, actions case-insensitive) both
match. Statements with a ``Condition``, ``NotAction`` or ``NotResource`` are refused here rather than half
evaluated. Managed policies (the Lambda basic execution role, X-Ray, the SQS poller role) are AWS's and serve
Lambda itself, not the function's code: they are listed, not evaluated.

A request some service makes on the caller's behalf is added (``implied``): S3, SQS, SNS and Secrets Manager
call KMS with the caller's permissions for their SSE-KMS resources, so a ``PutObject`` to a bucket encrypted
with the data key needs ``kms:GenerateDataKey`` on that key. DynamoDB does not: it uses its own grant.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from anfang_ops.template import load_template, transform_template

from .actions import partition_of
from .recorder import ACCOUNT_ID, Deployment

__all__ = ["Grant", "RenderedRole", "Resolver", "Roles", "implied", "matches"]

# Which KMS actions a service asks for, with the caller's permissions, per (service, operation) on an SSE-KMS
# resource (AWS documentation of each service's SSE-KMS).
IMPLIED_KMS: Final = {
    ("s3", "PutObject"): ("kms:GenerateDataKey",),
    ("s3", "GetObject"): ("kms:Decrypt",),
    ("sqs", "SendMessage"): ("kms:GenerateDataKey", "kms:Decrypt"),
    ("sqs", "SendMessageBatch"): ("kms:GenerateDataKey", "kms:Decrypt"),
    ("sqs", "ReceiveMessage"): ("kms:Decrypt",),
    ("sns", "Publish"): ("kms:GenerateDataKey", "kms:Decrypt"),
    ("sns", "PublishBatch"): ("kms:GenerateDataKey", "kms:Decrypt"),
    ("secretsmanager", "GetSecretValue"): ("kms:Decrypt",),
}


@dataclass(frozen=True, order=True)
class Grant:
    """One action of one statement on one resource entry of a function's role, as written in the template."""

    function: str
    policy: str
    action: str
    resource: str  # the template expression, e.g. "${DevicesTable.Arn}/index/*"


@dataclass(frozen=True)
class RenderedStatement:
    policy: str
    actions: tuple[str, ...]
    resources: tuple[tuple[str, str], ...]  # (label, resolved pattern)


@dataclass(frozen=True)
class RenderedRole:
    function: str
    statements: tuple[RenderedStatement, ...]
    managed: tuple[str, ...]

    def allowing(self, action: str, resource: str) -> list[Grant]:
        """The grants that allow ``action`` on ``resource`` (empty: denied)."""
        found = []
        for statement in self.statements:
            for pattern in statement.actions:
                if not matches(pattern, action, case_sensitive=False):
                    continue
                for label, resolved in statement.resources:
                    if matches(resolved, resource):
                        found.append(Grant(self.function, statement.policy, pattern, label))
        return found

    def grants(self) -> Iterator[Grant]:
        for statement in self.statements:
            for action in statement.actions:
                for label, _ in statement.resources:
                    yield Grant(self.function, statement.policy, action, label)


@functools.cache
def _pattern(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, 0 if case_sensitive else re.IGNORECASE)


def matches(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM's wildcard match: ``*`` any run of characters (``/`` and ``:`` included), ``?`` one character."""
    return _pattern(pattern, case_sensitive).fullmatch(value) is not None


def label(node: Any) -> str:
    """A template expression as a short, stable text (the same for every deployment)."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and len(node) == 1:
        ((fn, arg),) = node.items()
        if fn == "Ref":
            return str(arg)
        if fn == "Fn::GetAtt":
            return ".".join(arg) if isinstance(arg, list) else str(arg)
        if fn == "Fn::Sub":
            return arg if isinstance(arg, str) else str(arg[0])
        if fn == "Fn::If":
            return f"If({arg[0]}, {label(arg[1])}, {label(arg[2])})"
    return json.dumps(node, sort_keys=True)


class Resolver:
    """Intrinsic functions of the transformed template, resolved for one deployment."""

    def __init__(self, template: dict[str, Any], deployment: Deployment) -> None:
        self.resources: dict[str, Any] = template["Resources"]
        self.conditions: dict[str, Any] = template.get("Conditions", {})
        self.d = deployment
        self.partition = partition_of(deployment.region)
        self.parameters: dict[str, Any] = {}
        for name, spec in template.get("Parameters", {}).items():
            value = deployment.parameters.get(name, spec.get("Default", ""))
            if spec.get("Type") == "CommaDelimitedList":
                value = str(value).split(",") if value != "" else [""]
            self.parameters[name] = value
        self.pseudo = {
            "AWS::Partition": self.partition,
            "AWS::Region": deployment.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::URLSuffix": "amazonaws.com.cn" if self.partition == "aws-cn" else "amazonaws.com",
            "AWS::StackName": deployment.stack_name,
        }

    def condition(self, name: str) -> bool:
        return bool(self.value(self.conditions[name]))

    def physical(self, logical: str) -> str:
        if logical in self.d.physical_ids:
            return self.d.physical_ids[logical]
        if self.resources.get(logical, {}).get("Type") == "AWS::SecretsManager::Secret":
            # the local deploy creates secrets beside the stack, named "<stack>-<logical id>"
            name = f"{self.d.stack_name}-{logical}"
            if name in self.d.secrets:
                return self.d.secrets[name]
        if self.resources.get(logical, {}).get("Type") == "AWS::KMS::Key":
            # asymmetric keys are created beside the stack too, described "<stack> <logical id>"
            description = f"{self.d.stack_name} {logical}"
            if description in self.d.keys:
                return self.d.keys[description]
        raise LookupError(f"{self.d.stack_name}: no physical id for {logical}")

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.physical(name)

    def arn(self, logical: str) -> str:
        kind = self.resources[logical]["Type"]
        physical = self.physical(logical)
        p, r, a = self.partition, self.d.region, ACCOUNT_ID
        if kind == "AWS::DynamoDB::Table":
            return f"arn:{p}:dynamodb:{r}:{a}:table/{physical}"
        if kind == "AWS::SQS::Queue":
            return f"arn:{p}:sqs:{r}:{a}:{physical.rstrip('/').rsplit('/', 1)[-1]}"
        if kind == "AWS::S3::Bucket":
            return f"arn:{p}:s3:::{physical}"
        if kind == "AWS::KMS::Key":
            return physical if physical.startswith("arn:") else f"arn:{p}:kms:{r}:{a}:key/{physical}"
        if kind in {"AWS::SNS::Topic", "AWS::SecretsManager::Secret"}:
            return physical
        raise LookupError(f"no ARN rule for {kind} ({logical})")

    def getatt(self, logical: str, attribute: str) -> str:
        if attribute == "Arn":
            return self.arn(logical)
        raise LookupError(f"GetAtt {logical}.{attribute} is not resolved here")

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.value(variables[name]))
            if "." in name:
                logical, attribute = name.split(".", 1)
                return self.getatt(logical, attribute)
            return str(self.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.value(v) for v in node]
        if not isinstance(node, dict):
            return node
        if len(node) != 1:
            return {k: self.value(v) for k, v in node.items()}
        ((fn, arg),) = node.items()
        if fn == "Ref":
            return self.ref(arg)
        if fn == "Fn::GetAtt":
            logical, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self.getatt(logical, attribute)
        if fn == "Fn::Sub":
            return self.sub(arg, {}) if isinstance(arg, str) else self.sub(arg[0], arg[1])
        if fn == "Fn::If":
            return self.value(arg[1] if self.condition(arg[0]) else arg[2])
        if fn == "Fn::Equals":
            left, right = self.value(arg[0]), self.value(arg[1])
            return str(left) == str(right)
        if fn == "Fn::Not":
            return not self.value(arg[0])
        if fn == "Fn::And":
            return all(self.value(v) for v in arg)
        if fn == "Fn::Or":
            return any(self.value(v) for v in arg)
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Join":
            return str(arg[0]).join(str(v) for v in self.value(arg[1]))
        if fn == "Fn::Split":
            return str(self.value(arg[1])).split(str(arg[0]))
        return {fn: self.value(arg)}


class Roles:
    """The functions' roles of template.yaml after the SAM transform, for one set of parameters."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._source = load_template(root / "template.yaml")

    @functools.cache  # noqa: B019 - one instance per test session; keys are hashable
    def _transformed(self, parameters: tuple[tuple[str, str], ...], region: str) -> str:
        # samtranslator takes the region of its pseudo parameters from the environment, whatever session it gets
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_DEFAULT_REGION", region)
            return json.dumps(transform_template(self._source, dict(parameters), region))

    def template(self, deployment: Deployment) -> dict[str, Any]:
        key = tuple(sorted(deployment.parameters.items()))
        result: dict[str, Any] = json.loads(self._transformed(key, deployment.region))
        return result

    def render(self, deployment: Deployment) -> tuple[dict[str, RenderedRole], dict[str, str]]:
        """Each function's role resolved for ``deployment``, and each encrypted resource's KMS key ARN."""
        template = self.template(deployment)
        resolver = Resolver(template, deployment)
        roles: dict[str, RenderedRole] = {}
        resources = template["Resources"]
        for name, resource in resources.items():
            if resource["Type"] != "AWS::Lambda::Function":
                continue
            role_ref = resource["Properties"]["Role"]
            role = resources[role_ref["Fn::GetAtt"][0]]["Properties"]
            statements = []
            for policy in role.get("Policies", []):
                for written in _as_list(policy["PolicyDocument"]["Statement"]):
                    statement = resolver.value(written) if set(written) == {"Fn::If"} else written
                    if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
                        raise ValueError(f"{name}: only Allow statements are evaluated here: {statement}")
                    unsupported = {"Condition", "NotAction", "NotResource", "NotPrincipal"} & set(statement)
                    if unsupported:
                        raise ValueError(f"{name}: {sorted(unsupported)} in a role statement is not evaluated here")
                    rendered = []
                    for entry in _as_list(statement["Resource"]):
                        resolved = resolver.value(entry)
                        for value in _as_list(resolved):
                            rendered.append((label(entry), str(value)))
                    statements.append(
                        RenderedStatement(policy["PolicyName"], tuple(_as_list(statement["Action"])), tuple(rendered))
                    )
            managed = tuple(label(arn) for arn in role.get("ManagedPolicyArns", []))
            roles[name] = RenderedRole(name, tuple(statements), managed)
        return roles, self._keys(resources, resolver)

    @staticmethod
    def _keys(resources: dict[str, Any], resolver: Resolver) -> dict[str, str]:
        """ARN of each SSE-KMS bucket, queue, topic and secret -> the ARN of its key."""
        keys: dict[str, str] = {}
        for logical, resource in resources.items():
            if logical not in resolver.d.physical_ids and resource["Type"] != "AWS::SecretsManager::Secret":
                continue
            props = resource.get("Properties", {})
            kind = resource["Type"]
            key: Any = None
            if kind == "AWS::S3::Bucket":
                rules = props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
                key = next((r["ServerSideEncryptionByDefault"].get("KMSMasterKeyID") for r in rules), None)
            elif kind in {"AWS::SQS::Queue", "AWS::SNS::Topic"}:
                key = props.get("KmsMasterKeyId")
            elif kind == "AWS::SecretsManager::Secret":
                key = props.get("KmsKeyId")
            if key is None:
                continue
            key_arn = str(resolver.value(key))
            if not key_arn.startswith("arn:"):
                key_arn = f"arn:{resolver.partition}:kms:{resolver.d.region}:{ACCOUNT_ID}:key/{key_arn}"
            keys[resolver.arn(logical)] = key_arn
        return keys


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def base_arn(resource: str) -> str:
    """The resource a request's ARN belongs to: the bucket of an object, the table of an index."""
    if resource.startswith("arn:") and ":s3:::" in resource:
        return resource.split("/", 1)[0]
    if ":dynamodb:" in resource and "/index/" in resource:
        return resource.split("/index/", 1)[0]
    return resource


def implied(
    service: str, operation: str, requests: Iterable[tuple[str, str]], keys: dict[str, str]
) -> list[tuple[str, str]]:
    """The KMS requests a service makes with the caller's permissions for the resources of ``requests``."""
    actions = IMPLIED_KMS.get((service, operation), ())
    out: list[tuple[str, str]] = []
    for _, resource in requests:
        key = keys.get(base_arn(resource))
        if key is not None:
            out.extend((action, key) for action in actions)
    return list(dict.fromkeys(out))
