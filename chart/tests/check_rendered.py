#!/usr/bin/env python3
"""Structural checks of rendered chart output, called by chart/tests/run.sh.

    check_rendered.py case NAME FILE          assertions for one rendered case (see CASES)
    check_rendered.py config-keys FIELDS FILE...  every key in every rendered vdbi config.yaml is
                                              a key of src/config/fields.rs (vdbi warns on unknown keys)
    check_rendered.py config-keys-covered FIELDS FILE...  every key of src/config/fields.rs is
                                              rendered by some case (the chart can set it), or is
                                              fixed by the chart (listed with the reason)
    check_rendered.py dashboard DASHBOARD METRICS  every vdbi_* metric the dashboard queries exists
                                              in METRICS (src/telemetry/metrics/, a file or the
                                              directory of its .rs files)
    check_rendered.py tls-same A B            the webhook Secret and caBundle of two renders are equal
    check_rendered.py tls-rotated OLD NEW     NEW has a new certificate and its caBundle trusts both CAs

Exit 0 when every assertion holds; otherwise each failure is printed and the exit status is 1.
"""
import base64
import glob
import json
import os
import re
import sys

import yaml

FAILURES = []
CHART = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check(cond, msg):
    if not cond:
        FAILURES.append(msg)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind, name=None):
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    check(len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}")
    return found[0] if found else {}


def configs(docs):
    """component -> parsed config.yaml"""
    out = {}
    for cm in by_kind(docs, "ConfigMap"):
        data = cm.get("data") or {}
        if "config.yaml" in data:
            comp = cm["metadata"]["labels"]["app.kubernetes.io/component"]
            out[comp] = yaml.safe_load(data["config.yaml"])
    return out


def workloads(docs):
    """component -> pod spec"""
    out = {}
    for w in by_kind(docs, "Deployment") + by_kind(docs, "DaemonSet"):
        comp = w["metadata"]["labels"]["app.kubernetes.io/component"]
        out[comp] = w["spec"]["template"]["spec"]
    return out


def rules_of(docs, sa):
    """Every (verbs, resources, scope) granted to ServiceAccount `sa` by the rendered RBAC."""
    roles = {}
    for kind in ("ClusterRole", "Role"):
        for r in by_kind(docs, kind):
            roles[(kind, r["metadata"]["name"])] = r.get("rules", [])
    out = []
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for b in by_kind(docs, kind):
            if not any(s.get("name") == sa for s in b.get("subjects", [])):
                continue
            ref = b["roleRef"]
            for rule in roles.get((ref["kind"], ref["name"]), []):
                scope = "cluster" if kind == "ClusterRoleBinding" else b["metadata"]["namespace"]
                out.append((tuple(rule["verbs"]), tuple(rule["resources"]), tuple(rule.get("resourceNames", [])), scope))
    return out


def common(docs, release_ns="vdbi-system"):
    kinds = {d["kind"] for d in docs}
    check("CiliumNetworkPolicy" not in kinds, "a CiliumNetworkPolicy is rendered")
    cfgs = configs(docs)
    pods = workloads(docs)
    for comp, cfg in cfgs.items():
        check(cfg.get("mode") == comp, f"{comp} ConfigMap: mode is {cfg.get('mode')!r}")
        check("sentryDsn" not in cfg, f"{comp} ConfigMap carries sentryDsn (a secret)")
        check(cfg.get("sentry") is False or "INJECTOR_SENTRY_DSN" in json.dumps(pods.get(comp, {})),
              f"{comp}: sentry on without the DSN from a Secret")
    for comp in ("renewer", "revoker"):
        check("injectorLabel" in cfgs.get(comp, {}), f"{comp} ConfigMap lacks injectorLabel")
        env = {e["name"]: e for e in pods[comp]["containers"][0].get("env", [])}
        check(env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
              f"{comp}: POD_NAME not from the downward API")
        check(env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace",
              f"{comp}: POD_NAMESPACE not from the downward API")
    for comp, spec in pods.items():
        c = spec["containers"][0]
        sc = c.get("securityContext", {})
        check(sc.get("readOnlyRootFilesystem") is True, f"{comp}: root filesystem not read-only")
        check(sc.get("allowPrivilegeEscalation") is False, f"{comp}: privilege escalation allowed")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{comp}: capabilities not all dropped")
        check("resources" in c and c["resources"].get("requests"), f"{comp}: no resource requests")
        check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{comp}: liveness is not /healthz")
        check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{comp}: readiness is not /readyz")
        if comp != "nri":
            uid = sc.get("runAsUser", spec.get("securityContext", {}).get("runAsUser"))
            check(uid == 65534, f"{comp}: runs as uid {uid}, not 65534")
            check(sc.get("runAsNonRoot") is True, f"{comp}: runAsNonRoot not set")
            check(spec.get("securityContext", {}).get("seccompProfile", {}).get("type") == "RuntimeDefault",
                  f"{comp}: no RuntimeDefault seccomp profile")
    for comp in pods:
        if comp in ("injector", "renewer", "revoker"):
            check(any(p["metadata"]["labels"]["app.kubernetes.io/component"] == comp for p in by_kind(docs, "PodDisruptionBudget")),
                  f"{comp}: no PodDisruptionBudget")
    if "injector" in pods:
        inj = pods["injector"]
        mounts = inj["containers"][0]["volumeMounts"]
        tls = [m for m in mounts if m["name"] == "tls"]
        check(tls and "subPath" not in tls[0] and tls[0]["mountPath"] == "/tls", "injector: TLS Secret not mounted whole at /tls")
        check("affinity" in inj, "injector: no anti-affinity")
        cfg = cfgs["injector"]
        check(cfg.get("certFile") == "/tls/tls.crt" and cfg.get("keyFile") == "/tls/tls.key", "injector: cert/key paths")
        mwc = one(docs, "MutatingWebhookConfiguration")
        if mwc:
            wh = mwc["webhooks"][0]
            check(wh["failurePolicy"] == "Fail", "webhook failurePolicy is not Fail")
            check(wh["sideEffects"] == "NoneOnDryRun", "webhook sideEffects is not NoneOnDryRun")
            cc = wh["clientConfig"]
            path = cc["service"]["path"] if "service" in cc else "/" + cc.get("url", "").split("/", 3)[-1]
            check(path == "/mutate", "webhook path is not /mutate")
            check(wh["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
                  f"webhook rules: {wh['rules']}")
            t = wh["timeoutSeconds"]
            at = cfg["admissionTimeout"]
            ms = int(at[:-2]) if at.endswith("ms") else int(at[:-1]) * 1000
            check(0 < ms < t * 1000, f"admissionTimeout {at} is not below timeoutSeconds {t}")
            check(list(wh["objectSelector"]["matchLabels"].values()) == ["true"], "objectSelector is not <label>: \"true\"")
            exprs = wh["namespaceSelector"].get("matchExpressions", [])
            excluded = [v for e in exprs if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn" for v in e["values"]]
            check("kube-system" in excluded, "kube-system is not excluded from the webhook")
            check(release_ns in excluded, "the release namespace is not excluded from the webhook")
        # The injector needs no pod access at all.
        sa = inj["serviceAccountName"]
        shared = any(p["serviceAccountName"] == sa for c, p in pods.items() if c != "injector")
        if not shared:
            for verbs, res, _, _ in rules_of(docs, sa):
                check("pods" not in res, f"injector ServiceAccount is granted {verbs} on pods")
    for comp in ("renewer", "revoker"):
        sa = pods[comp]["serviceAccountName"]
        rules = rules_of(docs, sa)
        check((("list", "watch"), ("pods",), (), "cluster") in rules, f"{comp}: no cluster-wide pods list/watch")
        check(any(r[1] == ("leases",) and r[2] == (f"lock-injector-{comp}",) and r[3] == release_ns for r in rules),
              f"{comp}: no Role on its own Lease in {release_ns}")
        for verbs, res, names, scope in rules:
            if res == ("leases",):
                check(names or verbs == ("create",), f"{comp}: lease verbs {verbs} not limited to one name")
                check(scope == release_ns, f"{comp}: leases granted outside the release namespace")
            check("delete" not in verbs and "*" not in verbs, f"{comp}: granted {verbs} on {res}")
    return cfgs, pods


def token_rule_holders(docs):
    out = set()
    for k in ("ClusterRoleBinding", "RoleBinding"):
        for b in by_kind(docs, k):
            for s in b.get("subjects", []):
                if any(res == ("serviceaccounts/token",) for _, res, _, _ in rules_of(docs, s["name"])):
                    out.add(s["name"])
    return out


def case_default(docs):
    cfgs, pods = common(docs)
    for comp, spec in pods.items():
        check("hostNetwork" not in spec and "dnsPolicy" not in spec, f"{comp}: host network by default")
    for comp, cfg in cfgs.items():
        check(not {"webhookListen", "metricsListen", "healthListen"} & set(cfg), f"{comp}: listen keys by default")
    kinds = {d["kind"] for d in docs}
    for k in ("ServiceMonitor", "Certificate", "Issuer", "NetworkPolicy", "DaemonSet"):
        check(k not in kinds, f"default render has a {k}")
    check(not any("imagePullSecrets" in p for p in pods.values()), "default render has imagePullSecrets")
    check(all(c.get("sentry") is False for c in cfgs.values()), "sentry is on by default")
    check(set(cfgs) == {"injector", "renewer", "revoker"}, f"ConfigMaps: {sorted(cfgs)}")
    check(not token_rule_holders(docs), "serviceaccounts/token granted in legacy mode")
    check("webhookClientCAFile" not in cfgs["injector"], "client auth on without a CA Secret")
    check(cfgs["injector"]["admissionTimeout"] == "4s", "default admissionTimeout is not 4s")
    mwc = one(docs, "MutatingWebhookConfiguration")
    check(mwc["webhooks"][0]["timeoutSeconds"] == 5, "default timeoutSeconds is not 5")
    check(mwc["webhooks"][0]["clientConfig"].get("caBundle"), "generated TLS: caBundle missing")
    sec = one(docs, "Secret")
    check(sec.get("type") == "kubernetes.io/tls" and {"tls.crt", "tls.key", "ca.crt"} <= set(sec.get("data", {})), "generated TLS Secret incomplete")
    check(mwc["webhooks"][0]["clientConfig"]["caBundle"] == sec["data"]["ca.crt"], "caBundle is not the generated CA")
    for comp, spec in pods.items():
        check(spec["containers"][0]["args"] == [f"--config=/{comp}/config.yaml"], f"{comp}: args")


def case_projected(docs, nri=False):
    cfgs, pods = common(docs)
    check(all(c.get("useProjectedSA") is True for c in cfgs.values()), "useProjectedSA not rendered everywhere")
    check(all(c.get("tokenRequestAudiences") == ["vault"] for c in cfgs.values()), "audiences not rendered")
    holders = token_rule_holders(docs)
    want = {pods["injector"]["serviceAccountName"]} | ({pods["nri"]["serviceAccountName"]} if nri else set())
    check(holders == want, f"serviceaccounts/token holders {sorted(holders)}, want {sorted(want)}")


def case_nri(docs, projected=False):
    cfgs, pods = common(docs)
    check("nri" in pods, "no NRI DaemonSet")
    ds = one(docs, "DaemonSet")
    spec = pods["nri"]
    fullname = ds["metadata"]["name"][: -len("-nri")]
    c = spec["containers"][0]
    check(c["securityContext"].get("runAsUser") == 0, "NRI plugin does not run as root")
    env = {e["name"]: e for e in c.get("env", [])}
    check(env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName", "NRI: NODE_NAME not from spec.nodeName")
    hp = {v["hostPath"]["path"]: v["hostPath"].get("type") for v in spec["volumes"] if "hostPath" in v}
    check(hp.get("/var/run/nri") == "Directory", f"NRI socket hostPath: {hp}")
    check(hp.get(f"/run/{fullname}/nri") == "DirectoryOrCreate", f"NRI cache hostPath: {hp}")
    n = cfgs["nri"]["nri"]
    check(n["enabled"] is True and n["socketPath"] == "/var/run/nri/nri.sock", "NRI config socket")
    check(n["cachePath"] == f"/run/{fullname}/nri/cache.json", "NRI cache path")
    check(isinstance(n["pluginIndex"], str) and re.fullmatch(r"[0-9]{2}", n["pluginIndex"]), "pluginIndex not a two-digit string")
    check(n["pluginName"] == fullname and n["podLabel"] == "vault-db-injector", "NRI plugin name/pod label")
    check(cfgs["injector"]["nri"]["enabled"] is True, "injector does not know NRI is on (placeholders)")
    rules = rules_of(docs, spec["serviceAccountName"])
    check((("get", "list", "watch"), ("pods",), (), "cluster") in rules, "NRI: no pods get/list/watch")
    if projected:
        case_projected(docs, nri=True)
    else:
        check(not token_rule_holders(docs), "serviceaccounts/token granted without projected mode")


def case_cert_manager(docs):
    check_client_auth(*common(docs))
    kinds = [d["kind"] for d in docs]
    check(kinds.count("Certificate") == 2 and kinds.count("Issuer") == 2, "cert-manager objects")
    ca = one(docs, "Certificate", next(d["metadata"]["name"] for d in by_kind(docs, "Certificate") if d["spec"].get("isCA")))
    check(ca["spec"]["commonName"].endswith("-ca") and ca["spec"]["commonName"] != "ca.", f"CA commonName {ca['spec']['commonName']!r}")
    mwc = one(docs, "MutatingWebhookConfiguration")
    check("cert-manager.io/inject-ca-from" in mwc["metadata"].get("annotations", {}), "no cainjector annotation")
    check("caBundle" not in mwc["webhooks"][0]["clientConfig"], "caBundle set while cert-manager injects it")
    check(not any(d["kind"] == "Secret" and d["metadata"]["name"].endswith("-tls") for d in docs), "chart also generated a TLS Secret")
    check("ServiceMonitor" in kinds and "NetworkPolicy" in kinds, "ServiceMonitor/NetworkPolicy missing")
    rule = one(docs, "PrometheusRule")
    with open(os.path.join(CHART, "alerts", "vdbi.rules.yaml")) as f:
        check(rule["spec"] == yaml.safe_load(f), "PrometheusRule spec differs from chart/alerts/vdbi.rules.yaml")
    check(rule["metadata"]["labels"].get("release") == "prometheus", "prometheusRule.labels")
    cfgs = configs(docs)
    check(cfgs["revoker"].get("orphanLeaseDiscovery") == "revoke", "orphanLeaseDiscovery")
    check(cfgs["revoker"].get("orphanLeaseRoles") == ["databases/app-rw"], "orphanLeaseRoles")
    check(all(c.get("vaultRateLimit") == 0 for c in cfgs.values()), "vaultRateLimit: 0 (unlimited)")
    check(all(c.get("podWatchBrokenAfter") == "2m" for c in cfgs.values()), "podWatchBrokenAfter")
    check(all(c.get("logLevel") == "trace" for c in cfgs.values()), "logLevel trace")
    dash = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    check(dash and json.loads(dash[0]["data"]["vdbi.json"])["panels"], "dashboard ConfigMap missing or empty")
    rbs = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["name"].endswith("-token-requester")]
    check(sorted(b["metadata"]["namespace"] for b in rbs) == ["default", "vdbi-system"], "TokenRequest RoleBindings per listed namespace")
    check(not any(b["roleRef"]["name"].endswith("-token-requester") for b in by_kind(docs, "ClusterRoleBinding")),
          "cluster-wide TokenRequest binding despite rbac.tokenRequest.namespaces")


def case_go_chart(docs):
    cfgs, pods = common(docs)
    check(cfgs["renewer"]["kubeRole"] == "renewer" and cfgs["revoker"]["kubeRole"] == "revoker", "kubeRoleRenewer/Revoker")
    check(cfgs["nri"]["kubeRole"] == "nri-bookkeeping", "kubeRoleNri")
    check(cfgs["injector"]["admissionTimeout"] == "8500ms", "explicit admissionTimeout")
    check(all(c.get("vaultCACert") == "/vault-ca/ca.crt" for c in cfgs.values()), "vaultCACert")
    check(all(p.get("imagePullSecrets") == [{"name": "registry-token"}] for p in pods.values()), "imagePullSecrets")
    check(all(p["containers"][0]["image"] == "registry.example.com/vdbi:0.1.0" for p in pods.values()), "per-component image")
    sas = [d["metadata"]["name"] for d in by_kind(docs, "ServiceAccount")]
    check(sorted(sas) == ["vault-db-injector", "vault-db-injector-nri"], f"ServiceAccounts {sas}")
    mwc = one(docs, "MutatingWebhookConfiguration")
    check(mwc["webhooks"][0]["namespaceSelector"].get("matchLabels") == {"vault-db-injector": "enabled"}, "opt-in namespace label")
    check(base64.b64decode(mwc["webhooks"][0]["clientConfig"]["caBundle"]).startswith(b"-----BEGIN CERTIFICATE-----"), "caBundle from webhook.tls.secret.caBundle")


def case_go_323(docs):
    """vault-db-injector 3.2.3's values, its per-component Go image removed: vdbi's image everywhere."""
    cfgs, pods = common(docs)
    images = {c: p["containers"][0]["image"] for c, p in pods.items()}
    check(set(images.values()) == {"vdbi:0.1.0"}, f"images {images}")
    check(cfgs["injector"]["kubeRole"] == "all-rw" and cfgs["renewer"]["kubeRole"] == "all-rw", "kubeRole all-rw")
    check(all(c.get("sentry") is True for c in cfgs.values()), "sentry: true kept")


def case_example(docs, projected):
    cfgs, pods = common(docs)
    images = {c: p["containers"][0]["image"] for c, p in pods.items()}
    check(set(images.values()) == {"registry.example.com/vdbi:0.1.0"}, f"images {images}")
    if projected:
        case_nri(docs, projected=True)
        check(cfgs["renewer"]["kubeRole"] == "vdbi-renewer" and cfgs["nri"]["kubeRole"] == "vdbi-nri", "per-component roles")
    else:
        check(all(c.get("useProjectedSA") is False for c in cfgs.values()), "legacy example is not legacy")
        check("nri" not in pods, "legacy example deploys NRI")


def case_hostnetwork(docs):
    """Every pod on the node's network; each listener's port in its pod spec, its config.yaml and
    its annotations, all distinct; the webhook reached by URL."""
    case_nri(docs)
    cfgs, pods = configs(docs), workloads(docs)
    check(set(pods) == {"injector", "renewer", "revoker", "nri"}, f"workloads {sorted(pods)}")
    seen = {}
    for comp, spec in pods.items():
        check(spec.get("hostNetwork") is True, f"{comp}: hostNetwork not set")
        check(spec.get("dnsPolicy") == "ClusterFirstWithHostNet", f"{comp}: dnsPolicy {spec.get('dnsPolicy')!r}")
        ports = {p["name"]: p["containerPort"] for p in spec["containers"][0]["ports"]}
        keys = {"https": "webhookListen", "metrics": "metricsListen", "health": "healthListen"}
        for name, port in ports.items():
            check(cfgs[comp].get(keys[name]) == f"0.0.0.0:{port}", f"{comp}: {keys[name]} is not port {port}")
            check(port not in seen, f"{comp} {name} port {port} also used by {seen.get(port)}")
            seen[port] = f"{comp} {name}"
    for w in by_kind(docs, "Deployment") + by_kind(docs, "DaemonSet"):
        comp = w["metadata"]["labels"]["app.kubernetes.io/component"]
        metrics = next(p["containerPort"] for p in pods[comp]["containers"][0]["ports"] if p["name"] == "metrics")
        ann = w["spec"]["template"]["metadata"]["annotations"]
        check(ann.get("prometheus.io/port") == str(metrics), f"{comp}: prometheus.io/port {ann.get('prometheus.io/port')!r}")
    webhook_port = next(p["containerPort"] for p in pods["injector"]["containers"][0]["ports"] if p["name"] == "https")
    svc = [d for d in by_kind(docs, "Service") if d["metadata"]["labels"].get("app.kubernetes.io/component") == "injector"]
    check(svc and svc[0]["spec"]["ports"][0]["targetPort"] == webhook_port, "Service targetPort is not the webhook port")
    cc = one(docs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]
    check(cc.get("url") == f"https://127.0.0.1:{webhook_port}/mutate" and "service" not in cc, f"clientConfig {cc}")
    inj = one(docs, "Deployment", svc[0]["metadata"]["name"] if svc else None)
    check(inj.get("spec", {}).get("strategy", {}).get("rollingUpdate") == {"maxSurge": 0, "maxUnavailable": 1},
          "injector updateStrategy not rendered")
    for np in by_kind(docs, "NetworkPolicy"):
        comp = np["metadata"]["labels"]["app.kubernetes.io/component"]
        want = sorted(p["containerPort"] for p in pods[comp]["containers"][0]["ports"])
        got = sorted(p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"])
        check(got == want, f"{comp} NetworkPolicy ports {got}, pod listens on {want}")


def check_client_auth(cfgs, pods):
    cfg = cfgs["injector"]
    check(cfg.get("webhookClientCAFile") == "/client-ca/ca.crt", "client auth: webhookClientCAFile not set")
    check(cfg.get("webhookClientAllowedNames") == ["kube-apiserver-webhook-client"], "client auth: webhookClientAllowedNames")
    inj = pods["injector"]
    mounts = [m for m in inj["containers"][0]["volumeMounts"] if m["name"] == "client-ca"]
    check(mounts and mounts[0]["mountPath"] == "/client-ca" and "subPath" not in mounts[0], "client auth: client CA not mounted whole at /client-ca")
    vols = [v for v in inj["volumes"] if v["name"] == "client-ca"]
    check(vols and vols[0]["secret"]["secretName"] == "apiserver-webhook-client-ca", "client auth: client CA volume")


CASES = {
    "go-3.2.3": case_go_323,
    "example-projected-nri": lambda d: case_example(d, True),
    "example-legacy": lambda d: case_example(d, False),
    "default": case_default,
    "legacy": case_default,
    "projected": case_projected,
    "nri": case_nri,
    "projected-nri": lambda d: case_nri(d, projected=True),
    "cert-manager": case_cert_manager,
    "go-chart": case_go_chart,
    "hostnetwork": case_hostnetwork,
}


def known_fields(fields_rs):
    with open(fields_rs) as f:
        return set(re.findall(r'field!\(\s*"([^"]+)"', f.read()))


def flatten(d, prefix=""):
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from flatten(v, path + ".")
        else:
            yield path


def main(argv):
    cmd = argv[1]
    if cmd == "case":
        CASES[argv[2]](load(argv[3]))
    elif cmd == "config-keys":
        known = known_fields(argv[2])
        check(len(known) > 30, f"parsed only {len(known)} keys from {argv[2]}")
        for path in argv[3:]:
            for comp, cfg in configs(load(path)).items():
                for key in flatten(cfg):
                    check(key in known, f"{path}: {comp} config key {key!r} is not a vdbi config key")
    elif cmd == "config-keys-covered":
        # The daemon's keys the chart sets itself, not from a value: fixed by the pod spec.
        chart_fixed = {
            "kubeTokenPath": "the chart mounts the ServiceAccount token at the default path",
            "sentryDsn": "passed as INJECTOR_SENTRY_DSN from a Secret, never in a ConfigMap",
        }
        known = known_fields(argv[2])
        rendered = set()
        for path in argv[3:]:
            docs = load(path)
            for cfg in configs(docs).values():
                rendered.update(flatten(cfg))
        for key in sorted(known - rendered - set(chart_fixed)):
            check(False, f"config key {key!r} cannot be set through the chart (no case renders it)")
    elif cmd == "dashboard":
        with open(argv[2]) as f:
            text = f.read()
        json.loads(text)
        sources = [argv[3]]
        if os.path.isdir(argv[3]):
            sources = sorted(glob.glob(os.path.join(argv[3], "*.rs")))
        defined = set()
        for source in sources:
            with open(source) as f:
                defined.update(re.findall(r'"(vdbi_[a-z0-9_]+)"', f.read()))
        used = set(re.findall(r"\b(vdbi_[a-z0-9_]+)", text))
        check(used, "the dashboard queries no vdbi_* metric")
        for m in sorted(used):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            check(m in defined or base in defined, f"dashboard queries {m}, which src/telemetry/metrics/ does not define")
    elif cmd in ("tls-same", "tls-rotated"):
        def tls(path):
            docs = load(path)
            sec = [d for d in by_kind(docs, "Secret") if d["type"] == "kubernetes.io/tls"][0]
            mwc = one(docs, "MutatingWebhookConfiguration")
            return sec["data"], base64.b64decode(mwc["webhooks"][0]["clientConfig"]["caBundle"]).decode()
        (a, ba), (b, bb) = tls(argv[2]), tls(argv[3])
        if cmd == "tls-same":
            check(a == b, "the generated certificate changed although the Secret exists and is valid")
            check(ba == bb == base64.b64decode(a["ca.crt"]).decode(), "caBundle changed or is not the Secret's CA")
        else:
            check(a["tls.crt"] != b["tls.crt"] and a["ca.crt"] != b["ca.crt"], "certificate not renewed")
            old_ca, new_ca = (base64.b64decode(x["ca.crt"]).decode() for x in (a, b))
            check(new_ca in bb and old_ca in bb, "caBundle after renewal does not trust both the new and the previous CA")
    else:
        raise SystemExit(f"unknown command {cmd}")
    for f in FAILURES:
        print(f"  assertion failed: {f}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
