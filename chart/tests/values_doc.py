#!/usr/bin/env python3
"""Renders the values reference of chart/README.md from chart/values.yaml: every leaf value, its
default and the comment block above it. The table sits between the markers
<!-- values:start --> and <!-- values:end -->.

    values_doc.py            rewrite chart/README.md in place
    values_doc.py --check    exit 1 when the README's table is not up to date
"""
import json
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.dirname(HERE)
START, END = "<!-- values:start -->", "<!-- values:end -->"


def comments(lines):
    """Dotted key path -> comment text, from the `#` lines directly above each key."""
    out, stack, pending = {}, [], []
    for line in lines:
        s = line.strip()
        if not s:
            pending = []
            continue
        if s.startswith("#"):
            pending.append(s.lstrip("#").strip())
            continue
        m = re.match(r"^(\s*)(- )?([A-Za-z0-9_.\-/]+):", line)
        if not m or m.group(2):
            pending = []
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(3)))
        path = ".".join(k for _, k in stack)
        text = " ".join(p[3:] if p.startswith("-- ") else p for p in pending)
        if text:
            out[path] = text
        pending = []
    return out


# Kubernetes-shaped values shown whole rather than leaf by leaf.
WHOLE = {"resources", "podSecurityContext", "containerSecurityContext", "updateStrategy"}

# Descriptions of the per-component keys (injector, renewer, revoker, nri) by their last segment.
GENERIC = {
    "serviceAccountName": "ServiceAccount of the component (empty: the chart's name, see RBAC)",
    "serviceAccount.create": "Create that ServiceAccount",
    "serviceAccount.annotations": "Annotations of that ServiceAccount (e.g. cloud IAM bindings)",
    "args": "Container args (the component's ConfigMap is mounted at /<component>/config.yaml)",
    "replicas": "Pod replicas",
    "image.repository": "Image repository of this component (empty: image.repository)",
    "image.tag": "Image tag of this component (empty: image.tag)",
    "imagePullPolicy": "Pull policy of this component (empty: image.pullPolicy)",
    "resources": "Container resources",
    "podSecurityContext": "Pod securityContext",
    "containerSecurityContext": "Container securityContext",
    "podAnnotations": "Extra pod annotations",
    "podLabels": "Extra pod labels",
    "nodeSelector": "Pod nodeSelector",
    "tolerations": "Pod tolerations",
    "affinity": "Pod affinity (replaces the antiAffinity default)",
    "antiAffinity": "soft | hard | none: spread replicas over nodes by kubernetes.io/hostname",
    "topologySpreadConstraints": "Pod topologySpreadConstraints",
    "priorityClassName": "Pod priorityClassName",
    "pdb.enabled": "Create a PodDisruptionBudget",
    "pdb.maxUnavailable": "maxUnavailable of that PodDisruptionBudget",
    "extraEnv": "Extra container env (e.g. INJECTOR_* overrides)",
    "extraVolumes": "Extra pod volumes",
    "extraVolumeMounts": "Extra container volumeMounts",
    "updateStrategy": "DaemonSet updateStrategy",
    "config.webhookMaxBodyBytes": "vdbi `webhookMaxBodyBytes`: largest AdmissionReview accepted",
    "config.certReloadInterval": "vdbi `certReloadInterval`: how often the webhook checks its certificate files for rotation",
    "config.renewerConcurrency": "vdbi `renewerConcurrency`: concurrent Vault operations of one renewer cycle",
    "config.renewHorizonCycles": "vdbi `renewHorizonCycles`: renew only what expires within this many cycles",
    "config.revokeTerminatedPods": "vdbi `revokeTerminatedPods`: revoke as soon as a pod is Succeeded/Failed",
    "config.revokerSweepInterval": "vdbi `revokerSweepInterval`: safety-net sweep period",
    "config.revokerUnseenGrace": "vdbi `revokerUnseenGrace`: credentials of pods never seen are revoked after this",
    "config.orphanLeaseGrace": "vdbi `orphanLeaseGrace`: leases without a bookkeeping entry are revoked once older",
    "prewarmer.enabled": "vdbi `nri.prewarmer.enabled`: fetch credentials when a labelled pod is scheduled on the node",
    "prewarmer.maxConcurrent": "vdbi `nri.prewarmer.maxConcurrent`: concurrent prewarm fetches",
}


def generic(key):
    parts = key.split(".")
    if parts[0] == "vaultDbInjector" and len(parts) > 2 and parts[1] != "configuration":
        return GENERIC.get(".".join(parts[2:]), "")
    if parts[0] == "nri" and len(parts) > 1:
        return GENERIC.get(".".join(parts[1:]), "")
    return ""


def leaves(d, prefix=""):
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in WHOLE:
            yield from leaves(v, path + ".")
        else:
            yield path, v


def render():
    path = os.path.join(CHART, "values.yaml")
    with open(path) as f:
        text = f.read()
    values = yaml.safe_load(text)
    docs = comments(text.splitlines())
    rows = ["| Value | Default | Description |", "|---|---|---|"]
    for key, default in leaves(values):
        desc = docs.get(key, "") or generic(key)
        if not desc:
            # Fall back to the nearest documented parent section.
            parts = key.split(".")
            for i in range(len(parts) - 1, 0, -1):
                parent = ".".join(parts[:i])
                if parent in docs:
                    desc = docs[parent]
                    break
        shown = json.dumps(default, ensure_ascii=False)
        shown = shown.replace("|", "\\|")
        rows.append(f"| `{key}` | `{shown}` | {desc.replace('|', chr(92) + '|')} |")
    missing = [r.split("`")[1] for r in rows[2:] if r.endswith("|  |")]
    return "\n".join(rows) + "\n", missing


def main():
    readme = os.path.join(CHART, "README.md")
    with open(readme) as f:
        current = f.read()
    if START not in current or END not in current:
        sys.exit(f"{readme}: markers {START} / {END} missing")
    head, rest = current.split(START, 1)
    _, tail = rest.split(END, 1)
    table, missing = render()
    if missing:
        print("values without a description in chart/values.yaml: " + ", ".join(missing))
        return 1
    new = f"{head}{START}\n{table}{END}{tail}"
    if "--check" in sys.argv:
        if new != current:
            print("chart/README.md values table is out of date: run python3 chart/tests/values_doc.py")
            return 1
        return 0
    with open(readme, "w") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
