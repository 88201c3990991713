"""The tests' AWS resources, deployed from ``template.yaml`` (the same deploy the local stack does).

Tests build their stack from the template rather than by hand, so a table key, a queue's dead-letter queue,
a subscription or a function's environment variable cannot differ between what the tests exercise and what
a town deploys. The town's parameters are rendered by ``anfang_ops.towns`` as for ``infra/towns/*.toml``.

Works inside moto's in-process ``mock_aws()`` and against a moto server (``AWS_ENDPOINT_URL``): the clients
are made without an endpoint, so boto3 resolves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from anfang_ops.local import DeployedStack, deploy_stack
from anfang_ops.towns import TownConfig, TownSection

ROOT: Final = Path(__file__).resolve().parents[1]
TEMPLATE: Final = ROOT / "template.yaml"
TOWN: Final = "330106"


def town_parameters(stack_name: str, region: str) -> dict[str, str]:
    """The template parameters of the test town (every other parameter takes the template default)."""
    town = TownConfig(
        env="tests",
        town=TownSection(code=TOWN, name="Test Town", region=region, stack_name=stack_name),
        parameters={"HealthCodesEnabled": "true", "PoliceFieldKeyArn": "", "AlarmEmail": ""},
    )
    return town.parameter_overrides()


def deploy_test_stack(session: Any, stack_name: str, *, visibility_timeout_max_secs: int = 30) -> DeployedStack:
    """Deploy the template's runtime resources for the test town into whatever moto ``session`` reaches."""
    return deploy_stack(
        session,
        None,
        TEMPLATE,
        stack_name,
        town_parameters(stack_name, session.region_name),
        visibility_timeout_max_secs=visibility_timeout_max_secs,
    )
