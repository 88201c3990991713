"""Print a short table of a pytest-benchmark JSON file (``make bench``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    data = json.loads(Path(argv[0] if argv else "bench/results.json").read_text(encoding="utf-8"))
    rows = sorted(data.get("benchmarks", []), key=lambda b: (b.get("group") or "", b["stats"]["mean"]))
    group = None
    for bench in rows:
        if bench.get("group") != group:
            group = bench.get("group")
            print(f"\n{group}")
        mean_ms = bench["stats"]["mean"] * 1000
        extra = ", ".join(f"{k}={v}" for k, v in bench.get("extra_info", {}).items())
        print(f"  {bench['name']:<70} {mean_ms:10.3f} ms  {1 / bench['stats']['mean']:10.1f}/s  {extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
