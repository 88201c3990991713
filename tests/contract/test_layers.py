"""The rooms of the code and which way imports point (docs/architecture.md), enforced with import-linter.

contracts < aws | policies < health_codes < api | pipeline < ops; the edge agent imports only the contracts;
the Lambda layer never imports the ops tooling (``anfang_ops``) or the edge agent, and no function does.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers/shared/python/anfang"


def test_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_every_room_of_the_layer_is_placed_in_the_layer_rules() -> None:
    # A new room outside the rules would be free to import anything: every sub-package must be named.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c["layers"] for c in config["contracts"] if c["type"] == "layers")
    named = {module.strip() for layer in layers for module in layer.split("|")}
    rooms = {f"anfang.{p.parent.name}" for p in LAYER.glob("*/__init__.py")}
    assert rooms == named - {"anfang_ops"}, f"rooms not in the rules: {sorted(rooms - named)}"


def test_the_layer_holds_no_ops_tooling() -> None:
    # What only ops run (the CLI, the local stack, generators) must not ship to every function.
    names = {p.stem for p in LAYER.rglob("*.py")} | {p.name for p in LAYER.rglob("*") if p.is_dir()}
    assert not names & {"cli", "local", "schemas", "openapi", "template", "towns", "redrive", "stackinfo", "decrypt"}


def test_function_code_imports_only_the_layer() -> None:
    for path in sorted((ROOT / "functions").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for module in modules:
                assert module.split(".")[0] not in {"anfang_ops", "anfang_edge"}, f"{path}: imports {module}"
