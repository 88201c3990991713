"""Reading ``template.yaml``: CloudFormation short-form tags, the SAM transform, the function table.

Shared by the contract tests and the local stack, so both see the template the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = ["FunctionSpec", "as_packaged", "functions_of", "load_template", "transform_template"]

SERVERLESS_FUNCTION: Final = "AWS::Serverless::Function"


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that turns CloudFormation short-form tags (!Ref, !Sub, ...) into their long form."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template(path: Path) -> dict[str, Any]:
    """The template as plain data, intrinsic functions in their long form."""
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(data, dict) or "Resources" not in data:
        raise ValueError(f"{path} is not a CloudFormation template")
    return data


def as_packaged(template: dict[str, Any]) -> dict[str, Any]:
    """A copy with local code paths replaced by S3 URIs, as ``sam package`` does before the transform."""
    packaged = copy.deepcopy(template)
    for resource in packaged["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://artifacts/{props[key].strip('/')}.zip"
    return packaged


def transform_template(template: dict[str, Any], parameters: dict[str, str], region: str) -> dict[str, Any]:
    """The SAM transform of ``template`` (packaged first) into plain CloudFormation, for ``region``.

    The translator is built here rather than through ``samtranslator``'s ``transform()``, which takes no boto3
    session: the region (and so the partition, ``aws-cn`` in China) would come from the environment instead.
    Managed policies are named by ARN in the template, so the translator never asks IAM for them.
    """
    import boto3  # noqa: PLC0415 - only the transform needs it
    from samtranslator.parser.parser import Parser  # noqa: PLC0415 - a dev/local dependency
    from samtranslator.translator.translator import Translator  # noqa: PLC0415

    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=region))
    result: dict[str, Any] = translator.translate(
        as_packaged(template), parameter_values=dict(parameters), get_managed_policy_map=dict
    )
    return result


@dataclass(frozen=True)
class FunctionSpec:
    """One ``AWS::Serverless::Function`` as the local runtime needs it."""

    name: str
    code_uri: str
    handler: str
    timeout_secs: int
    memory_mb: int
    environment: dict[str, Any]
    events: dict[str, Any] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)


def functions_of(template: dict[str, Any]) -> dict[str, FunctionSpec]:
    """Every serverless function of the (untransformed) template with Globals applied."""
    globals_ = template.get("Globals", {}).get("Function", {})
    global_env = globals_.get("Environment", {}).get("Variables", {})
    specs = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != SERVERLESS_FUNCTION:
            continue
        props = resource["Properties"]
        env = {**global_env, **props.get("Environment", {}).get("Variables", {})}
        specs[name] = FunctionSpec(
            name=name,
            code_uri=props["CodeUri"],
            handler=props["Handler"],
            timeout_secs=int(props.get("Timeout", globals_.get("Timeout", 3))),
            memory_mb=int(props.get("MemorySize", globals_.get("MemorySize", 128))),
            environment=env,
            events=props.get("Events", {}),
            layers=[layer["Ref"] for layer in props.get("Layers", []) if isinstance(layer, dict)],
        )
    return specs
