"""template.yaml is a valid SAM template that the SAM translator accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import yaml
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parents[2]


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that understands CloudFormation short-form tags (!Ref, !Sub, ...)."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template() -> dict[str, Any]:
    return yaml.load((ROOT / "template.yaml").read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506


def _as_packaged(template: dict[str, Any]) -> dict[str, Any]:
    """Replace local code paths with S3 URIs, as `sam package` does before the transform runs."""
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://artifacts/{props[key].strip('/')}.zip"
    return template


def test_sam_transform_succeeds(monkeypatch: Any) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "cn-northwest-1")
    template = _as_packaged(load_template())
    session = boto3.session.Session(region_name="cn-northwest-1")
    output = transform(template, {"TownCode": "33010600", "TownName": "Xihu"}, _NoManagedPolicies(), session)
    assert "SharedLayer" not in output["Resources"]  # renamed to a hashed LayerVersion by the transform
    assert any(r["Type"] == "AWS::Lambda::LayerVersion" for r in output["Resources"].values())


class _NoManagedPolicies:
    """The translator asks IAM for managed policy ARNs; there are none in this template and no network."""

    def load(self) -> dict[str, str]:
        return {}
