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
