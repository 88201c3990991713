"""Print a short table of a pytest-benchmark JSON file: ``python -m tests.bench.report bench/results.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: str) -> int:
    doc = json.loads(Path(path).read_text())
    for bench in doc.get("benchmarks", []):
        extra = ", ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in bench["extra_info"].items()
        )
        print(f"{bench['name']:<50} mean {bench['stats']['mean']:.3f}s  {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bench/results.json"))
