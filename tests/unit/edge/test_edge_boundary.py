"""The edge agent runs with the core plus the `edge` extra: it never imports the cloud's dependencies."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("boto3", "botocore", "cv2", "PIL", "numpy", "aws_lambda_powertools", "chalice", "requests", "yaml")


def test_importing_every_edge_module_pulls_in_no_cloud_dependency() -> None:
    code = (
        "import sys, anfang_edge.cli, anfang_edge.agent, anfang_edge.sources.http, anfang_edge.sources.watch_dir,"
        " anfang_edge.sources.simulator, anfang_edge.systemd\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
