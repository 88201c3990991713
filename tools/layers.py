"""Requirements of the Lambda layers, generated from pyproject.toml so the two never disagree.

    python -m tools.layers          # write layers/*/requirements.txt
    python -m tools.layers --check  # exit 1 when a committed file differs

- ``layers/deps``: the core dependencies and the ``cloud`` extra, without Chalice (the API carries only its
  runtime, ``layers/chalice_runtime``) — for the api, process and healthcode_import functions;
- ``layers/imaging``: the ``imaging`` extra (OpenCV 4, numpy) plus only what the analyse function imports
  besides (pydantic for the contracts, Powertools for the batch processor): no cryptography, no Pillow;
- ``layers/chalice_runtime``: the Chalice requirement, of which the layer keeps two files.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
HEADER: Final = "# Generated from pyproject.toml by `python -m tools.layers`; do not edit by hand.\n"


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return match.group(0).lower().replace("_", "-")


def _requirements() -> tuple[list[str], dict[str, list[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return list(project["dependencies"]), dict(project["optional-dependencies"])


def generate() -> dict[str, str]:
    """The text of every generated layer requirements file, keyed by path relative to the repo."""
    core, extras = _requirements()
    by_name = {_name(r): r for r in [*core, *extras["cloud"], *extras.get("imaging", [])]}
    deps = [r for r in [*core, *extras["cloud"]] if _name(r) != "chalice"]
    imaging = [*extras.get("imaging", []), by_name["pydantic"], by_name["aws-lambda-powertools"]]
    files = {
        "layers/deps/requirements.txt": deps,
        "layers/imaging/requirements.txt": imaging,
        "layers/chalice_runtime/requirements.txt": [by_name["chalice"]],
    }
    return {path: HEADER + "".join(f"{r}\n" for r in sorted(reqs, key=_name)) for path, reqs in files.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for rel, text in generate().items():
        path = ROOT / rel
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(rel)
            if not check:
                path.write_text(text, encoding="utf-8")
    if check and stale:
        print("layer requirements differ from pyproject.toml: " + ", ".join(stale) + " (run python -m tools.layers)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
