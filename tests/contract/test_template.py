"""template.yaml: lint-clean (cfn-lint with the serverless rules, checkov), transformable for every town,
and in step with samconfig.toml and the generated layer requirements."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from anfang_ops import template
from anfang_ops.towns import load_towns, render_samconfig
from tests.iam.policy import Resolver, Roles, matches
from tests.iam.recorder import Deployment
from tools import layers

ROOT = Path(__file__).resolve().parents[2]
TOWNS = load_towns(ROOT / "infra" / "towns")


def load_template() -> dict[str, Any]:
    return template.load_template(ROOT / "template.yaml")


@pytest.mark.parametrize("town", TOWNS, ids=lambda t: t.env)
def test_sam_transform_succeeds_for_every_town(town: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", town.town.region)
    output = template.transform_template(load_template(), town.parameter_overrides(), town.town.region)
    types = {r["Type"] for r in output["Resources"].values()}
    assert {"AWS::Lambda::Function", "AWS::ApiGateway::RestApi", "AWS::Lambda::EventSourceMapping"} <= types
    # every SQS event source reports partial batch failures
    mappings = [r for r in output["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert mappings
    assert all(m["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings)


def test_town_parameters_are_template_parameters() -> None:
    parameters = set(load_template()["Parameters"])
    for town in TOWNS:
        assert set(town.parameter_overrides()) <= parameters, town.env


def test_cfn_lint_with_serverless_rules_and_partition_check() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "cfn-lint"),
            "--include-checks",
            "I3042",
            "--append-rules",
            "cfn_lint_serverless.rules",
            "--",
            str(ROOT / "template.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes_with_every_skip_justified() -> None:
    checkov = os.environ.get("CHECKOV", str(ROOT / ".venv-tools" / "bin" / "checkov"))
    assert Path(checkov).exists(), "checkov is installed into .venv-tools by `make test`"
    result = subprocess.run(
        [checkov, "-f", str(ROOT / "template.yaml"), "--framework", "cloudformation", "--compact", "--quiet"]
        + ["--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # every skip in the template carries a comment
    for name, resource in load_template()["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "")) > 20, f"{name}: skip {skip['id']} needs a reason"


def test_every_arn_uses_the_partition_pseudo_parameter() -> None:
    text = (ROOT / "template.yaml").read_text(encoding="utf-8")
    assert "arn:aws:" not in text
    assert "arn:aws-cn:" not in text


def test_samconfig_equals_a_fresh_rendering() -> None:
    committed = (ROOT / "samconfig.toml").read_text(encoding="utf-8")
    assert committed == render_samconfig(TOWNS), "run `anfang towns render`"


def test_layer_requirements_agree_with_pyproject() -> None:
    for rel, text in layers.generate().items():
        assert (ROOT / rel).read_text(encoding="utf-8") == text, f"{rel}: run `python -m tools.layers`"


def test_only_the_analyse_function_carries_opencv() -> None:
    resources = load_template()["Resources"]
    functions = {n: r for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    carriers = {n for n, r in functions.items() if {"Ref": "ImagingLayer"} in r["Properties"].get("Layers", [])}
    assert carriers == {"AnalyseFunction"}
    assert "opencv" not in (ROOT / "layers/deps/requirements.txt").read_text(encoding="utf-8")


def test_every_destination_of_the_table_has_its_resources_outputs_and_topic_variable() -> None:
    # The destination table (anfang.contracts.destinations) names the parts; forgetting one fails here.
    from anfang.contracts.destinations import DESTINATION_INFO  # noqa: PLC0415

    doc = load_template()
    resources, outputs = doc["Resources"], doc["Outputs"]
    process_env = resources["ProcessFunction"]["Properties"]["Environment"]["Variables"]
    for info in DESTINATION_INFO.values():
        for suffix in ("Topic", "Queue", "DeadLetterQueue", "Subscription", "DeadLetterAlarm"):
            assert f"{info.title}{suffix}" in resources, f"{info.name}: no {info.title}{suffix}"
        assert {info.queue_output, info.dead_letter_output} <= set(outputs), info.name
        assert info.topic_env in process_env, f"{info.name}: ProcessFunction lacks {info.topic_env}"
    assert (ROOT / "schemas/records/v1").is_dir()
    assert {p.stem.removesuffix(".schema") for p in (ROOT / "schemas/records/v1").glob("*.schema.json")} == {
        "record",
        *DESTINATION_INFO,
    }


POLICE_ACCOUNTS = ("111111111111", "222222222222")
GOV_ACCOUNTS = ("333333333333",)


def _subscribe_allowed(statements: list[dict[str, Any]], account: str, protocol: str, endpoint: str) -> bool:
    """IAM's answer to ``sns:Subscribe`` by ``account`` under a topic policy of Allow statements."""
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        principals = statement["Principal"]["AWS"]
        principals = principals if isinstance(principals, list) else [principals]
        if statement["Effect"] != "Allow" or "sns:Subscribe" not in actions or account not in principals:
            continue
        context = {"sns:Protocol": protocol, "sns:Endpoint": endpoint}
        satisfied = True
        for operator, pairs in statement.get("Condition", {}).items():
            assert operator in {"StringEquals", "StringLike"}, operator
            for key, value in pairs.items():
                wanted = value if isinstance(value, list) else [value]
                if operator == "StringEquals":
                    satisfied &= context[key] in wanted
                else:
                    satisfied &= any(matches(pattern, context[key]) for pattern in wanted)
        if satisfied:
            return True
    return False


@pytest.mark.parametrize(
    ("protocol", "endpoint", "allowed"),
    [
        ("sqs", "arn:aws-cn:sqs:cn-north-1:{account}:police-feed", True),
        ("lambda", "arn:aws-cn:lambda:cn-north-1:{account}:function:relay", True),
        ("sqs", "arn:aws-cn:sqs:cn-north-1:999999999999:somebody-elses", False),
        ("lambda", "arn:aws-cn:lambda:cn-north-1:999999999999:function:x", False),
        ("https", "https://collector.example.com/records", False),
        ("http", "http://10.0.0.1/records", False),
        ("email", "someone@example.com", False),
        ("email-json", "someone@example.com", False),
        ("sms", "+8613800000000", False),
        ("firehose", "arn:aws-cn:firehose:cn-north-1:{account}:deliverystream/x", False),
        ("application", "arn:aws-cn:sns:cn-north-1:{account}:app/GCM/x", False),
    ],
)
def test_consumers_may_subscribe_only_their_own_queues_and_functions(
    protocol: str, endpoint: str, allowed: bool
) -> None:
    # GIVEN a town with two police consumer accounts and one gov-cloud consumer account
    parameters = {
        "TownCode": "330106",
        "TownName": "Test",
        "PoliceConsumerAccountIds": ",".join(POLICE_ACCOUNTS),
        "GovCloudConsumerAccountIds": ",".join(GOV_ACCOUNTS),
    }
    deployment = Deployment(
        "t", "cn-north-1", parameters, {"PoliceVideoTopic": "arn:aws-cn:sns:cn-north-1:1:p", "GovCloudTopic": "g"}
    )
    transformed = Roles(ROOT).template(deployment)
    resolver = Resolver(transformed, deployment)
    for topic_policy, accounts in (("PoliceVideoTopicPolicy", POLICE_ACCOUNTS), ("GovCloudTopicPolicy", GOV_ACCOUNTS)):
        statements = resolver.value(transformed["Resources"][topic_policy]["Properties"]["PolicyDocument"])["Statement"]
        for account in accounts:
            # WHEN a consumer account asks to subscribe; THEN only sqs and lambda endpoints in a consumer account pass
            answer = _subscribe_allowed(statements, account, protocol, endpoint.format(account=account))
            assert answer is allowed, (topic_policy, account, protocol, endpoint)
        # AND an account that is not a consumer of this destination may not subscribe at all
        assert not _subscribe_allowed(statements, "444444444444", "sqs", "arn:aws-cn:sqs:cn-north-1:444444444444:q")


def test_logs_are_kept_six_months_and_the_api_is_protected_by_default() -> None:
    source = load_template()
    parameters = source["Parameters"]
    # GIVEN the template's defaults: logs kept at least 180 days (Cybersecurity Law art. 21)
    assert int(parameters["LogRetentionDays"]["Default"]) >= 180
    # THEN the API function has reserved concurrency and a per-key budget without any parameter set
    base = {"TownCode": "330106", "TownName": "Test"}
    deployment = Deployment("t", "cn-north-1", base, {"ApiFunction": "f", "IngestApi": "api123"})
    transformed = Roles(ROOT).template(deployment)
    resolver = Resolver(transformed, deployment)
    api = transformed["Resources"]["ApiFunction"]["Properties"]
    assert int(resolver.value(api["ReservedConcurrentExecutions"])) > 0
    assert int(resolver.value(api["Environment"]["Variables"]["KEY_RATE_LIMIT_REQUESTS"])) > 0
    # AND the WAF web ACL is off unless asked for
    assert not resolver.condition("HasApiWaf")


def test_the_optional_waf_limits_rate_per_ip_and_sizes_and_runs_the_managed_common_rules() -> None:
    parameters = {"TownCode": "330106", "TownName": "Test", "ApiWafEnabled": "true", "ApiWafRateLimit": "3000"}
    deployment = Deployment("t", "cn-north-1", parameters, {"IngestApi": "api123"})
    transformed = Roles(ROOT).template(deployment)
    resolver = Resolver(transformed, deployment)
    assert resolver.condition("HasApiWaf")
    resources = transformed["Resources"]
    acl = resolver.value(resources["ApiWebAcl"]["Properties"])
    rules = {rule["Name"]: rule for rule in acl["Rules"]}
    # THEN the first rule is a per-source-IP rate limit answered with 429
    first = min(acl["Rules"], key=lambda rule: rule["Priority"])
    assert first["Statement"]["RateBasedStatement"] == {"Limit": "3000", "AggregateKeyType": "IP"}
    assert first["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 429
    # AND paths and query strings have size limits, and AWS's common rule set runs (its 8 KB body rule counts only)
    sizes = rules["size-limits"]["Statement"]["OrStatement"]["Statements"]
    assert {next(iter(s["SizeConstraintStatement"]["FieldToMatch"])) for s in sizes} == {"UriPath", "QueryString"}
    common = rules["aws-common-rule-set"]["Statement"]["ManagedRuleGroupStatement"]
    assert common["Name"] == "AWSManagedRulesCommonRuleSet"
    assert common["RuleActionOverrides"] == [{"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}]
    # AND it is associated with the API's prod stage and logs to a WAF log group
    association = resources["ApiWebAclAssociation"]["Properties"]
    assert association["WebACLArn"] == {"Fn::GetAtt": ["ApiWebAcl", "Arn"]}
    assert (
        resolver.value(association["ResourceArn"]) == "arn:aws-cn:apigateway:cn-north-1::/restapis/api123/stages/prod"
    )
    assert resources["ApiWebAclAssociation"]["DependsOn"] in ("IngestApiprodStage", ["IngestApiprodStage"])
    assert "IngestApiprodStage" in resources
    assert resources["ApiWafLogs"]["Properties"]["LogGroupName"]["Fn::Sub"].startswith("aws-waf-logs-")


def test_the_transform_takes_the_region_it_is_given_not_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a China town and an environment that names another region
    town = next(t for t in TOWNS if t.town.region.startswith("cn-"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    output = template.transform_template(load_template(), town.parameter_overrides(), town.town.region)
    # THEN the ARNs SAM writes are in the town's partition
    text = str(output["Resources"])
    assert "arn:aws-cn:" in text or "AWS::Partition" in text
    assert "arn:aws:" not in text


def test_derived_images_expire_with_the_raw_images() -> None:
    # GIVEN the two image buckets' lifecycle rules
    resources = load_template()["Resources"]

    def expirations(bucket: str) -> list[Any]:
        rules = resources[bucket]["Properties"]["LifecycleConfiguration"]["Rules"]
        return [
            r["ExpirationInDays"]
            for r in rules
            if r["Status"] == "Enabled" and "Prefix" not in r and "ExpirationInDays" in r
        ]

    # THEN every object of the image bucket (the thumbnails) expires after the same parameter as the raw images,
    # so no thumbnail outlives the picture it was made from, and there is no separate knob to make it
    assert expirations("RawImageBucket") == [{"Ref": "RawImageRetentionDays"}]
    assert expirations("ImageBucket") == [{"Ref": "RawImageRetentionDays"}]
    assert "DerivedImageRetentionDays" not in load_template()["Parameters"]


def test_both_pipeline_functions_agree_on_the_derived_images_and_the_default_is_what_the_policies_send() -> None:
    from anfang.pipeline.process_wiring import derived_kinds_used  # noqa: PLC0415
    from anfang.pipeline.thumbnails import DEFAULT_DERIVED_KINDS  # noqa: PLC0415
    from anfang.policies import default_policies  # noqa: PLC0415

    doc = load_template()
    resources = doc["Resources"]
    for function in ("AnalyseFunction", "ProcessFunction"):
        variables = resources[function]["Properties"]["Environment"]["Variables"]
        assert variables["DERIVED_IMAGES"] == {"Ref": "DerivedImages"}, function
    # the default stores exactly what the default policies send: no unblurred thumbnail nobody reads
    used = set().union(*(derived_kinds_used(p) for p in default_policies().values()))
    assert set(doc["Parameters"]["DerivedImages"]["Default"].split(",")) == used == set(DEFAULT_DERIVED_KINDS)


def test_the_archive_bucket_is_encrypted_private_tls_only_and_expires_after_the_retention_parameter() -> None:
    doc = load_template()
    resources = doc["Resources"]
    props = resources["ArchiveBucket"]["Properties"]
    # SSE-KMS with the stack's data key, no public access, no versioning (an object is written once per batch)
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["DataKey", "Arn"]},
    }
    assert all(props["PublicAccessBlockConfiguration"].values()) and len(props["PublicAccessBlockConfiguration"]) == 4
    assert "VersioningConfiguration" not in props
    # every object expires after ArchiveRetentionDays, 180 by default
    expirations = [r["ExpirationInDays"] for r in props["LifecycleConfiguration"]["Rules"] if "Prefix" not in r]
    assert expirations == [{"Ref": "ArchiveRetentionDays"}]
    assert doc["Parameters"]["ArchiveRetentionDays"]["Default"] == 180
    # TLS only
    (statement,) = resources["ArchiveBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::GetAtt": ["ArchiveBucket", "Arn"]} in statement["Resource"]


def test_every_destination_topic_delivers_raw_to_its_archive_queue_which_the_archive_function_drains() -> None:
    from anfang.contracts.destinations import DESTINATION_INFO  # noqa: PLC0415

    resources = load_template()["Resources"]
    function = resources["ArchiveFunction"]["Properties"]
    events = {e["Properties"]["Queue"]["Fn::GetAtt"][0]: e["Properties"] for e in function["Events"].values()}
    for info in DESTINATION_INFO.values():
        subscription = resources[f"{info.title}ArchiveSubscription"]["Properties"]
        assert subscription["TopicArn"] == {"Ref": f"{info.title}Topic"}
        assert subscription["Protocol"] == "sqs" and subscription["RawMessageDelivery"] is True
        assert subscription["Endpoint"] == {"Fn::GetAtt": [f"{info.title}ArchiveQueue", "Arn"]}
        assert "FilterPolicy" not in subscription  # every record is archived
        queue = resources[f"{info.title}ArchiveQueue"]["Properties"]
        assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
            "Fn::GetAtt": [f"{info.title}ArchiveDeadLetterQueue", "Arn"]
        }
        assert f"{info.title}ArchiveDeadLetterAlarm" in resources
        assert events[f"{info.title}ArchiveQueue"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert function["Environment"]["Variables"][info.archive_queue_env] == {
            "Fn::GetAtt": [f"{info.title}ArchiveQueue", "Arn"]
        }
        policy = resources[f"{info.title}ArchiveQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
        assert policy["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Ref": f"{info.title}Topic"}}}
