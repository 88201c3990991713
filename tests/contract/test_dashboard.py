"""The town dashboard in template.yaml is the one anfang_ops.dashboard describes, and it names real things."""

from __future__ import annotations

import json
import re
from pathlib import Path

from anfang_ops.dashboard import PANELS, dashboard_body
from anfang_ops.template import load_template

ROOT = Path(__file__).resolve().parents[2]


def test_the_template_dashboard_is_the_generated_one() -> None:
    resource = load_template(ROOT / "template.yaml")["Resources"]["TownDashboard"]
    assert resource["Type"] == "AWS::CloudWatch::Dashboard"
    body = resource["Properties"]["DashboardBody"]["Fn::Sub"]
    assert json.loads(body) == json.loads(dashboard_body()), "run `python -m anfang_ops.dashboard`"


def test_every_placeholder_is_a_parameter_or_a_resource_and_every_panel_asked_for_is_there() -> None:
    template = load_template(ROOT / "template.yaml")
    names = set(template["Resources"]) | set(template["Parameters"]) | {"AWS::Region"}
    for placeholder in re.findall(r"\$\{([^}]+)\}", dashboard_body()):
        assert placeholder.split(".")[0] in names, placeholder
    titles = " | ".join(panel.title for panel in PANELS).lower()
    for wanted in (
        "events",
        "rejected",
        "faces blurred",
        "delivered",
        "age",
        "dead letters",
        "errors",
        "duration",
        "devices seen",
    ):
        assert wanted in titles, wanted
