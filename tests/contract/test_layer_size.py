"""Every function and its layers fit Lambda's 250 MB unzipped limit (budget 240 MB), on arm64 and x86_64.

Each Makefile layer is built exactly as `sam build` builds it (same Makefile, wheels for python3.12
manylinux of the architecture), so the sizes are those of a deployment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.contract.test_template import load_template

ROOT = Path(__file__).resolve().parents[2]
BUDGET_BYTES = 240 * 1024 * 1024
ARCHS = ("aarch64", "x86_64")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def built_layers(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], int]:
    """Size in bytes of every layer of the template, per architecture."""
    sizes: dict[tuple[str, str], int] = {}
    for name, resource in load_template()["Resources"].items():
        if resource["Type"] != "AWS::Serverless::LayerVersion":
            continue
        content = ROOT / resource["Properties"]["ContentUri"]
        for arch in ARCHS:
            if resource.get("Metadata", {}).get("BuildMethod") == "makefile":
                out = tmp_path_factory.mktemp(f"{name}-{arch}")
                subprocess.run(
                    ["make", "-s", "-C", str(content), f"build-{name}", f"ARTIFACTS_DIR={out}", f"LAMBDA_ARCH={arch}"]
                    + [f"PIP={sys.executable} -m pip"],
                    check=True,
                    timeout=900,
                    env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
                )
                sizes[(name, arch)] = _size(out)
            else:
                sizes[(name, arch)] = _size(content)
    return sizes


def _functions() -> dict[str, Any]:
    resources = load_template()["Resources"]
    return {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("function", sorted(_functions()))
def test_function_and_layers_fit_the_budget(function: str, arch: str, built_layers: dict[tuple[str, str], int]) -> None:
    props = _functions()[function]
    layer_names = [layer["Ref"] for layer in props.get("Layers", [])]
    total = _size(ROOT / props["CodeUri"]) + sum(built_layers[(name, arch)] for name in layer_names)
    detail = {name: f"{built_layers[(name, arch)] / 2**20:.1f} MB" for name in layer_names}
    assert total <= BUDGET_BYTES, f"{function} on {arch}: {total / 2**20:.1f} MB > 240 MB ({detail})"


@pytest.mark.slow
def test_chalice_runtime_layer_has_only_the_runtime(tmp_path: Path) -> None:
    subprocess.run(
        ["make", "-s", "-C", str(ROOT / "layers/chalice_runtime"), "build-ChaliceRuntimeLayer"]
        + [f"ARTIFACTS_DIR={tmp_path}", f"PIP={sys.executable} -m pip"],
        check=True,
        timeout=300,
    )
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["python/chalice/__init__.py", "python/chalice/app.py"]
    # the runtime imports with the standard library alone
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import chalice; print(chalice.Chalice.__name__)"],
        env={"PYTHONPATH": str(tmp_path / "python")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.strip() == "Chalice", result.stderr
