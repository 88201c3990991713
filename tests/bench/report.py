"""Print the benchmark table of `make bench` from bench/results.json (pytest-benchmark JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "bench/results.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    cpu = data["machine_info"]["cpu"].get("brand_raw", "")
    print(f"benchmarks on {cpu}, {data['datetime']}")
    print("| benchmark | mean | min | rounds | per second | extra |")
    print("|---|---|---|---|---|---|")
    tables = []
    for bench in data["benchmarks"]:
        stats = bench["stats"]
        extra = dict(bench.get("extra_info", {}))
        if "faces_table" in extra:  # the labeled face benchmark (tests/bench/test_bench_faces.py)
            tables.append(extra.pop("faces_table"))
        per_round = extra.pop("events_per_round", 1)
        rate = per_round / stats["mean"] if stats["mean"] else 0.0
        unit = "events/s" if per_round != 1 else "ops/s"
        shown = ", ".join(f"{k}={v}" for k, v in extra.items())
        print(
            f"| {bench['name']} | {stats['mean'] * 1e3:.3f} ms | {stats['min'] * 1e3:.3f} ms | {stats['rounds']} "
            f"| {rate:,.0f} {unit} | {shown} |"
        )
    for table in tables:
        print(f"\nfaces (recall per size bin = face width / long side; found = centre inside a detection)\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
