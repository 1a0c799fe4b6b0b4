#!/usr/bin/env python3
"""CycloneDX 1.5 SBOM (JSON) of what the vdbi binary is built from: the `vdbi` package and every
crate its normal and build dependencies pull in (not dev-dependencies), from `cargo metadata`
(resolved for the given target, from Cargo.lock as it is) and Cargo.lock's checksums.

Usage: scripts/sbom.py [--target TRIPLE] > vdbi.cdx.json     (run from the repository)"""
import datetime
import json
import pathlib
import subprocess
import sys
import tomllib
import uuid

repo = pathlib.Path(__file__).resolve().parent.parent
args = sys.argv[1:]
target = args[args.index("--target") + 1] if "--target" in args else None
cmd = ["cargo", "metadata", "--format-version", "1", "--locked", "--manifest-path", str(repo / "Cargo.toml")]
if target:
    cmd += ["--filter-platform", target]
meta = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
lock = tomllib.loads((repo / "Cargo.lock").read_text())
checksums = {(p["name"], p["version"]): p.get("checksum") for p in lock["package"]}

pkgs = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = next(p["id"] for p in meta["packages"] if p["name"] == "vdbi" and p["source"] is None)

# Walk normal and build dependencies from vdbi.
seen, todo, edges = set(), [root], {}
while todo:
    pid = todo.pop()
    if pid in seen:
        continue
    seen.add(pid)
    deps = []
    for d in nodes[pid]["deps"]:
        if any(k["kind"] in (None, "build") for k in d["dep_kinds"]):
            deps.append(d["pkg"])
            todo.append(d["pkg"])
    edges[pid] = sorted(set(deps))


def ref(p):
    return f"pkg:cargo/{p['name']}@{p['version']}"


def component(p):
    c = {"type": "library", "bom-ref": ref(p), "name": p["name"], "version": p["version"], "purl": ref(p)}
    if p.get("license"):
        c["licenses"] = [{"expression": p["license"]}]
    if p.get("description"):
        c["description"] = " ".join(p["description"].split())
    s = checksums.get((p["name"], p["version"]))
    if s:
        c["hashes"] = [{"alg": "SHA-256", "content": s}]
    if p["source"] is None:
        c["type"] = "application" if p["id"] == root else "library"
    return c


top = pkgs[root]
bom = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.5",
    "serialNumber": f"urn:uuid:{uuid.uuid4()}",
    "version": 1,
    "metadata": {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tools": {"components": [{"type": "application", "name": "scripts/sbom.py (cargo metadata)"}]},
        "component": component(top),
    },
    "components": [component(pkgs[i]) for i in sorted(seen - {root}, key=lambda i: (pkgs[i]["name"], pkgs[i]["version"]))],
    "dependencies": [
        {"ref": ref(pkgs[i]), "dependsOn": [ref(pkgs[d]) for d in edges[i]]}
        for i in sorted(seen, key=lambda i: (pkgs[i]["name"], pkgs[i]["version"]))
    ],
}
json.dump(bom, sys.stdout, indent=1)
print()
