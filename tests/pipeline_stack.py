"""The town stack in moto for the pipeline tests, deployed from template.yaml (``tests.template_stack``).

Also the Lambda-shaped SQS driver: receive real messages, hand them to a handler as an SQS event, delete the
ones it did not report in ``batchItemFailures`` (the others come back after their visibility timeout and
move to the DLQ after maxReceiveCount, as SQS does).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import importlib.util
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse, HTTPHeaders

from anfang.contracts import HealthCodeStatus, SiteView
from anfang.health_codes.table import HealthCodeRecord
from tests.template_stack import deploy_test_stack

ROOT = Path(__file__).resolve().parents[1]
REGION = "cn-north-1"
PEPPER = b"town-pepper-for-tests-0123456789"


def load_handler(name: str) -> ModuleType:
    """Import ``functions/<name>/handler.py`` as Lambda would (it is not a package)."""
    path = ROOT / "functions" / name / "handler.py"
    spec = importlib.util.spec_from_file_location(f"anfang_fn_{name}_handler", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


class MemorySites:
    """In-memory device registry view (the real adapter is the ingest API's ``anfang.aws.registry``)."""

    def __init__(self, sites: Mapping[str, SiteView]) -> None:
        self.sites = dict(sites)
        self.calls = 0

    def sites_of(self, device_ids: Iterable[str]) -> dict[str, SiteView]:
        self.calls += 1
        return {d: self.sites[d] for d in device_ids if d in self.sites}


class MemoryHealthCodes:
    """In-memory health-code table by person key (the real adapter is ``anfang.health_codes.table``)."""

    def __init__(self, codes: Mapping[str, HealthCodeRecord] | None = None) -> None:
        self.codes = dict(codes or {})
        self.calls = 0

    @classmethod
    def of(cls, *codes: tuple[str, HealthCodeStatus, dt.datetime]) -> MemoryHealthCodes:
        """A table holding one delta per (ID number, status, updated_at)."""
        records = (HealthCodeRecord(person_key(i), status, at, "delta:1") for i, status, at in codes)
        return cls({r.person_key: r for r in records})

    def batch_get(self, person_keys: Sequence[str]) -> dict[str, HealthCodeRecord]:
        self.calls += 1
        return {k: self.codes[k] for k in person_keys if k in self.codes}


def person_key(id_number: str) -> str:
    return hmac.new(PEPPER, id_number.upper().encode(), hashlib.sha256).hexdigest()


# The functions whose environment ``Stack.env`` merges; the process function's wins where names are shared
# (only POWERTOOLS_SERVICE_NAME differs: every shared resource name is the same in each).
PIPELINE_FUNCTIONS = ("AnalyseFunction", "ArchiveFunction", "HealthcodeImportFunction", "ProcessFunction")


@dataclass
class Stack:
    session: Any
    env: dict[str, str]
    process_queue: str
    process_dlq: str
    analyse_queue: str
    analyse_dlq: str
    gov_queue: str
    police_queue: str
    police_key: str
    functions: dict[str, dict[str, str]] = field(default_factory=dict)  # each function's own environment
    api_env: dict[str, str] = field(default_factory=dict)  # the API function's, for tests that ingest too
    calls: Counter[str] = field(default_factory=Counter)

    def client(self, service: str) -> Any:
        return self.session.client(service)


def create_stack(*, max_receive_count: int = 3) -> Stack:
    """Deploy template.yaml into the active moto mock and return the pipeline functions' configuration."""
    session = boto3.session.Session(region_name=REGION)
    # VisibilityTimeout 0 on every queue that has one in the template (the template's are 6x a Lambda timeout):
    # the tests drive the functions like the event source mapping and see a failed message again at once.
    deployed = deploy_test_stack(session, "anfang-test", visibility_timeout_max_secs=0)
    functions = {name: dict(deployed.functions[name].environment) for name in PIPELINE_FUNCTIONS}
    env = {k: v for name in PIPELINE_FUNCTIONS for k, v in functions[name].items()}
    clashes = {k for f in functions.values() for k, v in f.items() if v != env[k]} - {"POWERTOOLS_SERVICE_NAME"}
    assert not clashes, f"the pipeline functions' environments disagree on {sorted(clashes)}: env cannot merge them"
    outputs = deployed.outputs
    sqs, sm = session.client("sqs"), session.client("secretsmanager")
    # The template retries a message 5 times before its DLQ; the poison tests drive max_receive_count rounds
    # (3 by default) to reach it. The dead-letter target stays the template's.
    for queue in ("ProcessQueue", "AnalyseQueue"):
        url = outputs[f"{queue}Url"]
        policy = json.loads(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
        )
        policy["maxReceiveCount"] = max_receive_count
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": json.dumps(policy)})
    # The template generates a random pepper; the tests compute expected person keys from a known one.
    sm.put_secret_value(SecretId=env["HEALTH_CODE_PEPPER_SECRET_ARN"], SecretString=PEPPER.decode())
    return Stack(
        session=session,
        env=env,
        process_queue=outputs["ProcessQueueUrl"],
        process_dlq=outputs["ProcessDeadLetterQueueUrl"],
        analyse_queue=outputs["AnalyseQueueUrl"],
        analyse_dlq=outputs["AnalyseDeadLetterQueueUrl"],
        gov_queue=outputs["GovCloudQueueUrl"],
        police_queue=outputs["PoliceVideoQueueUrl"],
        police_key=env["POLICE_FIELD_KEY_ARN"],
        functions=functions,
        api_env=dict(deployed.functions["ApiFunction"].environment),
    )


def count_calls(session: Any, calls: Counter[str]) -> None:
    """Count every AWS API call made through ``session``'s clients, per service and operation."""

    def hook(model: Any, **_: Any) -> None:
        calls[f"{model.service_model.service_name}.{model.name}"] += 1

    session.events.register("before-call.*.*", hook)


def refuse_disabled_kms_keys(session: Any) -> None:
    """Make ``session``'s KMS clients refuse ``GenerateDataKey`` under a key that is not enabled, as AWS does.

    moto answers GenerateDataKey for a disabled key; AWS answers ``DisabledException`` (HTTP 400). The key's
    state is read from moto itself (DescribeKey), so ``disable_key`` / ``enable_key`` drive it as on AWS.
    Register before the clients under test are made from ``session``.
    """
    checker = session.client("kms")
    for key in checker.list_keys()["Keys"]:
        # moto's CloudFormation keeps a template's key policy as an object, with AWS::NoValue statements as
        # nulls, on which moto's own DescribeKey fails: store the same policy as the text AWS would keep
        policy = checker.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"]
        if not isinstance(policy, str):
            policy["Statement"] = [statement for statement in policy.get("Statement", []) if statement]
            checker.put_key_policy(KeyId=key["KeyId"], PolicyName="default", Policy=json.dumps(policy))

    def refuse(params: Mapping[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        body = params["body"]
        key_id = (body if isinstance(body, Mapping) else json.loads(body))["KeyId"]
        state = checker.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]
        if state == "Enabled":
            return None
        error = {
            "Error": {"Code": "DisabledException", "Message": f"{key_id} is {state.lower()}."},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        return AWSResponse(url="", status_code=400, headers=HTTPHeaders(), raw=None), error

    session.events.register("before-call.kms.GenerateDataKey", refuse)


def lambda_sqs_event(queue_arn: str, messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A Lambda SQS event built from real ReceiveMessage results."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def drive(
    sqs: Any, queue_url: str, handler: Callable[[dict[str, Any]], dict[str, Any]], *, max_rounds: int = 50
) -> int:
    """Poll ``queue_url`` like the Lambda event source mapping until it is empty; returns handler invocations."""
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for invocations in range(max_rounds):
        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
            "Messages", []
        )
        if not received:
            return invocations
        response = handler(lambda_sqs_event(queue_arn, received))
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        done = [m for m in received if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
    raise AssertionError(f"{queue_url} did not drain in {max_rounds} rounds")


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message on a queue (received and deleted), with attributes."""
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get(
            "Messages", []
        )
        if not got:
            return out
        out.extend(got)
        sqs.delete_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        )


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
