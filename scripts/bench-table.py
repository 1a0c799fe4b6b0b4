#!/usr/bin/env python3
"""Prints the last `cargo bench` results as a Markdown table (docs/benchmarks.md).

Reads criterion's `<target>/criterion/**/new/{benchmark,estimates}.json`: the median time per
iteration with its 95 % confidence interval, and the throughput at the median when the bench
declares one. Usage: scripts/bench-table.py [TARGET_DIR]  (default: $CARGO_TARGET_DIR or target)
"""
import json
import os
import sys
from pathlib import Path


def fmt_time(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_throughput(tp: dict, ns: float) -> str:
    if not tp:
        return ""
    (kind, amount), = tp.items()
    per_s = amount / (ns / 1e9)
    if kind == "Bytes":
        for unit, scale in (("GiB/s", 2**30), ("MiB/s", 2**20)):
            if per_s >= scale:
                return f"{per_s / scale:.3g} {unit}"
        return f"{per_s / 2**10:.3g} KiB/s"
    if kind == "Elements":
        return f"{per_s / 1e6:.3g} M elem/s"
    return f"{per_s:.3g} {kind}/s"


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "target"))
    rows = []
    for bench in sorted((target / "criterion").glob("**/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        median = json.loads((bench.parent / "estimates.json").read_text())["median"]
        ci = median["confidence_interval"]
        ns = median["point_estimate"]
        rows.append(
            (
                meta["full_id"],
                fmt_time(ns),
                f"{fmt_time(ci['lower_bound'])} – {fmt_time(ci['upper_bound'])}",
                fmt_throughput(meta.get("throughput"), ns),
            )
        )
    if not rows:
        sys.exit(f"no criterion results under {target}/criterion: run `cargo bench` first")
    print("| bench | median | 95 % CI of the median | throughput |")
    print("|---|---|---|---|")
    for row in rows:
        print("| `{}` | {} | {} | {} |".format(*row))


if __name__ == "__main__":
    main()
