"""Print the figures of a pytest-benchmark JSON file (``make bench``): each benchmark's ``extra_info``.

python -m tests.bench.report bench/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "bench/results.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    for bench in data.get("benchmarks", []):
        print(f"## {bench['name']}")
        stats = bench.get("stats", {})
        if stats:
            print(
                f"  wall per round, AWS included: min {stats['min'] * 1e3:.1f} ms, median {stats['median'] * 1e3:.1f}"
            )
        for key, value in bench.get("extra_info", {}).items():
            print(f"  {key}: {value}")
    machine = data.get("machine_info", {})
    print(f"\nmachine: {machine.get('cpu', {}).get('brand_raw', '?')}, python {machine.get('python_version', '?')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
