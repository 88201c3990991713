"""Deploy ``template.yaml`` into a moto server through its CloudFormation API.

The template is transformed (SAM → CloudFormation) and split three ways:

- what the functions need at run time (keys, buckets, tables, queues, topics) goes through moto's
  CloudFormation, so names, ARNs and outputs come out of the same template a town deploys;
- what moto's CloudFormation does not implement is created with boto3: secrets and asymmetric KMS keys (moto's
  ``AWS::KMS::Key`` ignores ``KeySpec``/``KeyUsage``) before the stack (their ARNs are substituted where the
  template refers to them), SNS subscriptions and bucket versioning after it;
  resource policies are not enforced by moto and are skipped, as is the API's optional WAF web ACL;
- what runs in-process locally (functions, layers, roles, event source mappings, the REST API, log groups,
  alarms) is not deployed; its configuration (environment, batch sizes, triggers) is returned instead, with
  every environment value resolved by moto as an extra stack output.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from anfang_ops.template import load_template, transform_template

__all__ = ["DeployedStack", "LocalFunction", "QueueTrigger", "S3Trigger", "ScheduleTrigger", "deploy_stack"]

IN_PROCESS: Final = frozenset(
    {
        "AWS::Lambda::Function",
        "AWS::Lambda::LayerVersion",
        "AWS::Lambda::Permission",
        "AWS::Lambda::EventSourceMapping",
        "AWS::Lambda::EventInvokeConfig",
        "AWS::IAM::Role",
        "AWS::ApiGateway::RestApi",
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::Stage",
        "AWS::Logs::LogGroup",
        "AWS::CloudWatch::Alarm",
        "AWS::CloudWatch::Dashboard",  # its widgets name the functions; locally `anfang status` shows the same
        "AWS::Events::Rule",  # a schedule: the local stack runs the function on its own timer (ScheduleTrigger)
    }
)
# Resource policies and the API's web ACL: moto enforces neither, so the local stack skips them.
NOT_ENFORCED: Final = frozenset(
    {
        "AWS::SQS::QueuePolicy",
        "AWS::S3::BucketPolicy",
        "AWS::SNS::TopicPolicy",
        "AWS::WAFv2::WebACL",
        "AWS::WAFv2::WebACLAssociation",
        "AWS::WAFv2::LoggingConfiguration",
    }
)


@dataclass(frozen=True)
class QueueTrigger:
    """An SQS event source mapping of a function."""

    queue_url: str
    queue_arn: str
    batch_size: int
    batching_window_secs: int
    report_batch_item_failures: bool


@dataclass(frozen=True)
class S3Trigger:
    """An S3 notification to a function, with the on-failure destination of its async invocation."""

    bucket: str
    prefix: str
    max_retry_attempts: int
    on_failure_queue_url: str | None


@dataclass(frozen=True)
class ScheduleTrigger:
    """An EventBridge schedule of a function: its expression and the period it gives (``rate(...)`` only)."""

    expression: str
    period_secs: int | None  # None: a cron() expression, which the local stack does not run on its own


_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_UNIT_SECS: Final = {"minute": 60, "hour": 3600, "day": 86400}


def schedule_period_secs(expression: str) -> int | None:
    """The period of a ``rate(N unit)`` expression in seconds; None for anything else (``cron(...)``)."""
    match = _RATE.fullmatch(expression.strip())
    return int(match.group(1)) * _UNIT_SECS[match.group(2).rstrip("s")] if match else None


@dataclass
class LocalFunction:
    """A function of the template as the local runtime runs it."""

    name: str
    code_uri: str
    handler: str
    timeout_secs: int
    memory_mb: int
    environment: dict[str, str]
    queue_triggers: list[QueueTrigger] = field(default_factory=list)
    s3_triggers: list[S3Trigger] = field(default_factory=list)
    schedule_triggers: list[ScheduleTrigger] = field(default_factory=list)
    api_routes: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class DeployedStack:
    stack_name: str
    outputs: dict[str, str]
    functions: dict[str, LocalFunction]
    physical_ids: dict[str, str]


def _refs(node: Any) -> set[str]:
    """Logical ids a template fragment refers to."""
    found: set[str] = set()
    if isinstance(node, dict):
        if set(node) == {"Ref"} and isinstance(node["Ref"], str):
            found.add(node["Ref"])
        elif set(node) == {"Fn::GetAtt"}:
            target = node["Fn::GetAtt"]
            found.add(target[0] if isinstance(target, list) else str(target).split(".")[0])
        elif set(node) == {"Fn::Sub"}:
            text = node["Fn::Sub"] if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"][0]
            found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
            if isinstance(node["Fn::Sub"], list):
                found |= _refs(node["Fn::Sub"][1])
        else:
            for value in node.values():
                found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _substitute(node: Any, literals: dict[str, str]) -> Any:
    """Replace ``Ref`` (and ``GetAtt .Arn``) of resources created outside the stack by their literal ARNs."""
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in literals:
            return literals[node["Ref"]]
        if set(node) == {"Fn::GetAtt"}:
            target = node["Fn::GetAtt"]
            logical, attribute = target if isinstance(target, list) else str(target).split(".", 1)
            if logical in literals and attribute == "Arn":
                return literals[logical]
        return {k: _substitute(v, literals) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, literals) for v in node]
    return node


def _output_key(function: str, variable: str) -> str:
    return "LocalEnv" + function + "".join(part.capitalize() for part in variable.lower().split("_"))


@functools.lru_cache(maxsize=16)
def _transformed(path: Path, mtime_ns: int, parameters: tuple[tuple[str, str], ...], region: str) -> tuple[str, str]:
    """The template and its transform as JSON text: the transform is the slow part of a deploy, and the test
    suite deploys the same template many times (each caller gets fresh objects from ``json.loads``)."""
    source = load_template(path)
    return json.dumps(source), json.dumps(transform_template(source, dict(parameters), region))


def deploy_stack(
    session: Any,
    endpoint_url: str | None,
    template_path: Any,
    stack_name: str,
    parameters: dict[str, str],
    *,
    visibility_timeout_max_secs: int = 30,
) -> DeployedStack:
    """Deploy the template into the moto server at ``endpoint_url``; see the module docstring.

    ``endpoint_url`` None: boto3's own resolution (``AWS_ENDPOINT_URL``, or moto's in-process ``mock_aws``).
    """
    region = session.region_name
    path = Path(template_path).resolve()
    source_json, cfn_json = _transformed(path, path.stat().st_mtime_ns, tuple(sorted(parameters.items())), region)
    source, cfn_template = json.loads(source_json), json.loads(cfn_json)
    resources: dict[str, Any] = cfn_template["Resources"]

    client = {
        name: session.client(name, endpoint_url=endpoint_url) for name in ("cloudformation", "secretsmanager", "kms")
    }

    # secrets first: moto's CloudFormation has no AWS::SecretsManager::Secret
    literals: dict[str, str] = {}
    for name, resource in resources.items():
        if resource["Type"] == "AWS::SecretsManager::Secret":
            literals[name] = _create_secret(client["secretsmanager"], stack_name, name, resource["Properties"])
        elif resource["Type"] == "AWS::KMS::Key" and resource["Properties"].get("KeyUsage") == "SIGN_VERIFY":
            literals[name] = _create_signing_key(client["kms"], stack_name, name, resource["Properties"])

    in_process = {n: r for n, r in resources.items() if r["Type"] in IN_PROCESS}
    deferred = {n: r for n, r in resources.items() if r["Type"] in {"AWS::SNS::Subscription"} | NOT_ENFORCED}
    stack_resources = {}
    for name, resource in resources.items():
        if name in in_process or name in deferred or name in literals:
            continue
        local = copy.deepcopy(resource)
        local.pop("DependsOn", None)
        props = local.get("Properties", {})
        if local["Type"] == "AWS::S3::Bucket":
            props.pop("NotificationConfiguration", None)  # targets the in-process function
        if local["Type"] == "AWS::SQS::Queue" and "VisibilityTimeout" in props:
            # Local consumers retry a failed message after this, not after 6x a Lambda timeout.
            props["VisibilityTimeout"] = min(int(props["VisibilityTimeout"]), visibility_timeout_max_secs)
        stack_resources[name] = _substitute(local, literals)

    # outputs naming a resource made outside the stack (a secret's ARN) carry its literal id
    outputs = {
        k: _substitute(v, literals)
        for k, v in cfn_template.get("Outputs", {}).items()
        if not (_refs(v) & set(in_process))
    }
    env_outputs: dict[str, tuple[str, str]] = {}
    for name, resource in in_process.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        for variable, value in resource["Properties"].get("Environment", {}).get("Variables", {}).items():
            if isinstance(value, str):
                continue
            key = _output_key(name, variable)
            outputs[key] = {"Value": _substitute(value, literals)}
            env_outputs[key] = (name, variable)

    body = {**cfn_template, "Resources": stack_resources, "Outputs": outputs}
    cfn = client["cloudformation"]
    cfn.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(body),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(f"local stack {stack_name}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}")
    resolved = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    # A resource whose Condition is false is not created, yet moto lists it as an entry with neither a logical
    # nor a physical id (PoliceFieldKey of a town that brings its own key, gaoqing-luhu); skip such entries.
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.describe_stack_resources(StackName=stack_name)["StackResources"]
        if "LogicalResourceId" in r and "PhysicalResourceId" in r
    }
    physical.update(literals)

    sqs = session.client("sqs", endpoint_url=endpoint_url)
    queue_arns = {url: _queue_arn(sqs, url) for url in physical.values() if url.startswith("http")}  # once each
    _subscribe(session.client("sns", endpoint_url=endpoint_url), deferred, physical, queue_arns)
    _version_buckets(session.client("s3", endpoint_url=endpoint_url), resources, physical)
    functions = _functions(source, in_process, resolved, env_outputs, physical, queue_arns, parameters)
    public_outputs = {k: v for k, v in resolved.items() if k not in env_outputs}
    for name, secret_arn in literals.items():
        public_outputs[f"{name}Arn"] = secret_arn
    return DeployedStack(stack_name=stack_name, outputs=public_outputs, functions=functions, physical_ids=physical)


def _create_secret(client: Any, stack_name: str, name: str, props: dict[str, Any]) -> str:
    spec = props.get("GenerateSecretString", {})
    value = secrets.token_urlsafe(int(spec.get("PasswordLength", 32)))[: int(spec.get("PasswordLength", 32))]
    if "GenerateStringKey" in spec:
        template = json.loads(spec.get("SecretStringTemplate", "{}"))
        value = json.dumps({**template, spec["GenerateStringKey"]: value})
    answer = client.create_secret(Name=f"{stack_name}-{name}", SecretString=value)
    return str(answer["ARN"])


def _create_signing_key(client: Any, stack_name: str, name: str, props: dict[str, Any]) -> str:
    answer = client.create_key(Description=f"{stack_name} {name}", KeySpec=props["KeySpec"], KeyUsage=props["KeyUsage"])
    return str(answer["KeyMetadata"]["Arn"])


def _version_buckets(s3: Any, resources: dict[str, Any], physical: dict[str, str]) -> None:
    """Bucket versioning as the template says (moto's CloudFormation ignores ``VersioningConfiguration``)."""
    for name, resource in resources.items():
        versioning = resource.get("Properties", {}).get("VersioningConfiguration")
        if resource["Type"] == "AWS::S3::Bucket" and versioning:
            s3.put_bucket_versioning(Bucket=physical[name], VersioningConfiguration={"Status": versioning["Status"]})


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def _arn_of(node: Any, physical: dict[str, str], queue_arns: dict[str, str]) -> str:
    """The ARN a ``Ref`` (topics) or ``Fn::GetAtt [Queue, Arn]`` points at."""
    if isinstance(node, str):
        return node
    if "Ref" in node:
        return physical[node["Ref"]]
    target = node["Fn::GetAtt"]
    logical = target[0] if isinstance(target, list) else target.split(".")[0]
    return queue_arns[physical[logical]]


def _subscribe(sns: Any, deferred: dict[str, Any], physical: dict[str, str], queue_arns: dict[str, str]) -> None:
    for resource in deferred.values():
        if resource["Type"] != "AWS::SNS::Subscription" or "Condition" in resource:
            continue  # conditional subscriptions (alarm e-mail) have no local counterpart
        props = resource["Properties"]
        attributes = {}
        if props.get("RawMessageDelivery"):
            attributes["RawMessageDelivery"] = "true"
        if "RedrivePolicy" in props:
            target = _arn_of(props["RedrivePolicy"]["deadLetterTargetArn"], physical, queue_arns)
            attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": target})
        if "FilterPolicy" in props:
            attributes["FilterPolicy"] = json.dumps(props["FilterPolicy"])
        sns.subscribe(
            TopicArn=_arn_of(props["TopicArn"], physical, queue_arns),
            Protocol=props["Protocol"],
            Endpoint=_arn_of(props["Endpoint"], physical, queue_arns),
            Attributes=attributes,
        )


def _functions(
    source: dict[str, Any],
    in_process: dict[str, Any],
    resolved: dict[str, str],
    env_outputs: dict[str, tuple[str, str]],
    physical: dict[str, str],
    queue_arns: dict[str, str],
    parameters: dict[str, str],
) -> dict[str, LocalFunction]:
    functions: dict[str, LocalFunction] = {}
    for name, resource in in_process.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        props = resource["Properties"]
        spec = source["Resources"][name]["Properties"]
        env = {k: v for k, v in props.get("Environment", {}).get("Variables", {}).items() if isinstance(v, str)}
        functions[name] = LocalFunction(
            name=name,
            code_uri=spec["CodeUri"],
            handler=props["Handler"],
            timeout_secs=int(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
            environment=env,
        )
    for key, (function, variable) in env_outputs.items():
        functions[function].environment[variable] = resolved[key]

    queue_urls = {arn: url for url, arn in queue_arns.items()}
    for resource in in_process.values():
        props = resource["Properties"]
        if resource["Type"] == "AWS::Lambda::EventSourceMapping":
            queue_logical = props["EventSourceArn"]["Fn::GetAtt"][0]
            url = physical[queue_logical]
            functions[props["FunctionName"]["Ref"]].queue_triggers.append(
                QueueTrigger(
                    queue_url=url,
                    queue_arn=queue_arns[url],
                    batch_size=int(props.get("BatchSize", 10)),
                    batching_window_secs=int(props.get("MaximumBatchingWindowInSeconds", 0)),
                    report_batch_item_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                )
            )
    for name, spec in source["Resources"].items():
        if spec["Type"] != "AWS::Serverless::Function":
            continue
        invoke = spec["Properties"].get("EventInvokeConfig", {})
        on_failure = invoke.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        failure_url = queue_urls.get(_arn_of(on_failure, physical, queue_arns)) if on_failure else None
        for event in spec["Properties"].get("Events", {}).values():
            if event["Type"] == "S3":
                rules = event["Properties"].get("Filter", {}).get("S3Key", {}).get("Rules", [])
                prefix = next((r["Value"] for r in rules if r["Name"] == "prefix"), "")
                functions[name].s3_triggers.append(
                    S3Trigger(
                        bucket=physical[event["Properties"]["Bucket"]["Ref"]],
                        prefix=prefix,
                        max_retry_attempts=int(invoke.get("MaximumRetryAttempts", 2)),
                        on_failure_queue_url=failure_url,
                    )
                )
            elif event["Type"] == "Schedule":
                expression = _schedule_expression(event["Properties"]["Schedule"], source, parameters)
                functions[name].schedule_triggers.append(ScheduleTrigger(expression, schedule_period_secs(expression)))
            elif event["Type"] == "Api":
                functions[name].api_routes.append((event["Properties"]["Method"].upper(), event["Properties"]["Path"]))
    return functions


def _schedule_expression(value: Any, source: dict[str, Any], parameters: dict[str, str]) -> str:
    """A Schedule event's expression: a literal, or a ``Ref`` of a parameter (given, or its default)."""
    if isinstance(value, str):
        return value
    name = value["Ref"]
    return parameters.get(name) or str(source["Parameters"][name]["Default"])
