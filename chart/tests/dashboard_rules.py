#!/usr/bin/env python3
"""Prints every query of chart/dashboards/vdbi.json as a Prometheus recording rule, with the
dashboard's variables set to "All", so `promtool check rules` parses each one (a query Grafana
would show as an error fails the chart checks)."""
import json
import pathlib
import sys

dashboard = pathlib.Path(__file__).resolve().parent.parent / "dashboards" / "vdbi.json"
ALL = {"$__rate_interval": "5m", "$cluster": ".*", "$namespace": ".*", "$job": ".*"}


def exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                yield v
            else:
                yield from exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs(v)


def main():
    d = json.loads(dashboard.read_text())
    out = ["groups:", "  - name: dashboard-queries", "    rules:"]
    for i, e in enumerate(exprs(d["panels"])):
        for var, value in ALL.items():
            e = e.replace(var, value)
        if "$" in e.replace("$1", ""):
            sys.exit(f"unknown variable in: {e}")
        out.append(f"      - record: dashboard:query_{i}")
        out.append(f"        expr: {json.dumps(e)}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
