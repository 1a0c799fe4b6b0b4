#!/usr/bin/env bash
# Chart checks: alerting-rule unit tests (promtool), lint, render, schema, structure, plain
# manifests, and server-side dry-run of every rendered object against the local platform's real
# kube-apiserver.
#
# Usage: chart/tests/run.sh [--offline]
#   --offline  skip the apiserver checks (counted and reported as skipped); CI never passes it.
#
# The apiserver comes from the platform env file: $VDBI_PLATFORM_ENV, else <repo>/.platform/env
# (platform/vdbi-platform up). Objects are dry-run in $VDBI_SYSTEM_NAMESPACE (vdbi-system). Real
# changes to the apiserver: namespace `vdbi` (empty; the plain manifests are dry-run in it) and a
# short-lived Secret for the certificate-stability check, deleted at the end.
#
# Prints one line per check and a closing "N passed, N failed, N skipped"; exits 1 on any failure.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
chart="$repo/chart"
tests="$chart/tests"
offline=false
[ "${1:-}" = "--offline" ] && offline=true

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pass=0
fail=0
skip=0
failed_names=()

ok() { pass=$((pass + 1)); printf 'PASS  %s\n' "$1"; }
ko() {
  fail=$((fail + 1)); failed_names+=("$1"); printf 'FAIL  %s\n' "$1"
  [ -s "${2:-/dev/null}" ] && sed 's/^/      /' "$2" | head -40
}
sk() { skip=$((skip + 1)); printf 'SKIP  %s (%s)\n' "$1" "$2"; }

# run NAME CMD...: passes when CMD exits 0; output shown on failure.
run() {
  local name="$1"; shift
  if "$@" > "$work/out" 2>&1; then ok "$name"; else ko "$name" "$work/out"; fi
}

# run_fails NAME PATTERN CMD...: passes when CMD fails with PATTERN in its output.
run_fails() {
  local name="$1" pattern="$2"; shift 2
  if "$@" > "$work/out" 2>&1; then
    echo "unexpectedly succeeded" >> "$work/out"; ko "$name" "$work/out"
  elif grep -qiE -- "$pattern" "$work/out"; then
    ok "$name"
  else
    echo "(expected an error matching: $pattern)" >> "$work/out"; ko "$name" "$work/out"
  fi
}

python3 -c 'import yaml' 2>/dev/null || { echo "chart tests need PyYAML (pip install pyyaml)"; exit 1; }

echo "== tools"
if helm="$("$repo/platform/tools/helm/ensure.sh" helm 2> "$work/build.log")"; then
  ok "helm built from platform/tools/helm ($("$helm" version --short 2>/dev/null))"
else
  ko "build helm" "$work/build.log"
  echo "0 passed, 1 failed"; exit 1
fi
export HELM="$helm"

echo "== alerting rules and dashboard queries (chart/alerts, chart/dashboards)"
if promtool="$("$repo/platform/tools/prom/ensure.sh" promtool 2> "$work/promtool-build.log")"; then
  ok "promtool built from platform/tools/prom ($("$promtool" --version 2>&1 | head -1))"
  grep -h 'built in' "$work/promtool-build.log" || true
  run "promtool check rules chart/alerts/vdbi.rules.yaml" \
    "$promtool" check rules "$chart/alerts/vdbi.rules.yaml"
  run "promtool test rules chart/alerts/tests (leader-only staleness, standby and other-release cases)" \
    "$promtool" test rules "$chart"/alerts/tests/*.test.yaml
  python3 "$tests/dashboard_rules.py" > "$work/dashboard-queries.yaml"
  run "promtool check rules: every dashboard query parses (chart/tests/dashboard_rules.py)" \
    "$promtool" check rules "$work/dashboard-queries.yaml"
  run "promtool test rules chart/dashboards/tests (the pods' namespace under either scrape layout)" \
    "$promtool" test rules "$chart"/dashboards/tests/*.test.yaml
else
  ko "build promtool" "$work/promtool-build.log"
fi

echo "== schema and static files"
run "values.schema.json is generated from chart/tests/values_schema.py" \
  bash -c "python3 '$tests/values_schema.py' | diff -u '$chart/values.schema.json' -"
run "README values table is generated from values.yaml, every value described" \
  python3 "$tests/values_doc.py" --check
run "Dockerfile structure and toolchain (scripts/check-dockerfile.sh --no-build)" \
  "$repo/scripts/check-dockerfile.sh" --no-build
run "docs/vault-setup.md quotes deploy/vault/setup.sh (scripts/check-vault-doc.py)" \
  python3 "$repo/scripts/check-vault-doc.py"
run "dashboard queries only vdbi_* metrics defined in src/telemetry/metrics/" \
  python3 "$tests/check_rendered.py" dashboard "$chart/dashboards/vdbi.json" "$repo/src/telemetry/metrics"

# Cases: name -> values files (none = chart defaults). go-3.2.3: vault-db-injector 3.2.3's values
# file unmodified, plus the change the chart's refusal of it asks for (see "values that must be
# refused"). example-*: the ready values files docs/getting-started.md links.
cases=(default legacy projected nri projected-nri cert-manager go-chart go-3.2.3 example-projected-nri example-legacy hostnetwork)
case_args() { # sets args=(-f FILE...) for case $1
  args=()
  case "$1" in
    default) ;;
    go-3.2.3) args=(-f "$tests/values/vault-db-injector-3.2.3.yaml" -f "$tests/values/go-image-removed.yaml") ;;
    example-*) args=(-f "$chart/examples/${1#example-}.yaml") ;;
    *) args=(-f "$chart/ci/$1-values.yaml") ;;
  esac
}
ns=vdbi-system

echo "== helm lint and helm template"
for c in "${cases[@]}"; do
  case_args "$c"
  run "helm lint --strict ($c)" "$helm" lint --strict "$chart" "${args[@]}"
  if "$helm" template vdbi-test "$chart" --namespace "$ns" "${args[@]}" > "$work/$c.yaml" 2> "$work/err"; then
    ok "helm template ($c)"
    run "rendered objects: $c assertions" python3 "$tests/check_rendered.py" case "$c" "$work/$c.yaml"
  else
    ko "helm template ($c)" "$work/err"
  fi
done
run "every rendered vdbi config key is a key of src/config/fields.rs" \
  python3 "$tests/check_rendered.py" config-keys "$repo/src/config/fields.rs" "$work"/*.yaml
run "every key of src/config/fields.rs can be set through the chart (rendered by some case)" \
  python3 "$tests/check_rendered.py" config-keys-covered "$repo/src/config/fields.rs" "$work"/*.yaml

echo "== values that must be refused at install"
neg() { # name pattern helm-args...
  local name="$1" pattern="$2"; shift 2
  run_fails "refused: $name" "$pattern" "$helm" template vdbi-test "$chart" --namespace "$ns" "$@"
}
neg "vault-db-injector 3.2.3 values file, unmodified (Go image in three components)" \
  "vaultDbInjector.injector.image.repository, vaultDbInjector.renewer.image.repository, vaultDbInjector.revoker.image.repository: \"ghcr.io/numberly/vault-db-injector\" is vault-db-injector's Go image" \
  -f "$tests/values/vault-db-injector-3.2.3.yaml"
neg "Go image as image.repository" "image.repository: .* is vault-db-injector's Go image" --set image.repository=numberly/vault-db-injector
neg "Go image for the NRI DaemonSet" "nri.image.repository: .* is vault-db-injector's Go image" --set nri.enabled=true --set nri.image.repository=ghcr.io/numberly/vault-db-injector
neg "pluginIndex as a number" "pluginIndex.*want string" --set nri.pluginIndex=10
neg "pluginIndex not two digits" "pluginIndex.*pattern|does not match" --set-string nri.pluginIndex=123
neg "string where a bool is expected" "useProjectedSA.*want boolean" --set-string vaultDbInjector.configuration.useProjectedSA=true
neg "nri.enabled as a string" "enabled.*want boolean" --set-string nri.enabled=yes
neg "timeoutSeconds 0" "timeoutSeconds.*minimum" --set webhook.timeoutSeconds=0
neg "timeoutSeconds 31" "timeoutSeconds.*maximum" --set webhook.timeoutSeconds=31
neg "projected without audiences" "tokenRequestAudiences.*minItems" --set vaultDbInjector.configuration.useProjectedSA=true
neg "unknown configuration key" "additional properties|additionalProperties|not allowed" --set vaultDbInjector.configuration.vaultAdress=x
neg "unknown component config key" "additional properties|additionalProperties|not allowed" --set vaultDbInjector.renewer.config.foo=1
neg "unknown top-level key" "additional properties|additionalProperties|not allowed" --set foo=1
neg "invalid logLevel" "logLevel.*(enum|value must be)" --set vaultDbInjector.configuration.logLevel=verbose
neg "vaultAddress without scheme" "vaultAddress.*(pattern|does not match)" --set vaultDbInjector.configuration.vaultAddress=vault:8200
neg "Go duration malformed" "fetchTimeout.*(pattern|does not match)" --set nri.fetchTimeout=1.5sec
neg "TokenRequest expiry below 600" "tokenRequestExpirationSeconds.*minimum" --set vaultDbInjector.configuration.tokenRequestExpirationSeconds=300
neg "webhook name with two segments" "webhookFqdn.*(pattern|does not match)" --set vaultDbInjector.configuration.webhookFqdn=vdbi.io
neg "admissionTimeout not below timeoutSeconds" "admissionTimeout.*below webhook.timeoutSeconds" --set webhook.admissionTimeout=5s
neg "admissionTimeout in minutes" "admissionTimeout.*(pattern|does not match)" --set webhook.admissionTimeout=1m
neg "sentry without a DSN" "sentry is true" --set vaultDbInjector.configuration.sentry=true
neg "tls secret mode without a Secret" "tls.secret.name" --set webhook.tls.mode=secret
neg "unknown tls mode" "mode.*(enum|value must be)" --set webhook.tls.mode=selfsigned
neg "injector replicas 0" "replicas.*minimum" --set vaultDbInjector.injector.replicas=0
neg "client auth without a CA Secret" "clientAuth.caSecretName is required" --set vaultDbInjector.injector.clientAuth.enabled=true
neg "renewBeforeDays >= certValidityDays" "renewBeforeDays" --set webhook.tls.generate.renewBeforeDays=800
neg "bad image digest" "digest.*(pattern|does not match)" --set image.digest=latest
neg "excluded namespace not a DNS label" "excludeNamespaces.*(pattern|does not match)" --set 'webhook.namespaceSelector.excludeNamespaces={Kube_System}'
neg "webhook.url over plain http" "url.*(pattern|does not match)" --set webhook.url=http://127.0.0.1:8443/mutate
neg "hostNetwork with the default ports (every component on 8080/8888)" "hostNetwork: .* are both 8080, and the components share each node's ports" --set hostNetwork=true
neg "two listeners of one component on one port" "renewer.containerPorts.metrics and .*renewer.containerPorts.health are both 8888" --set vaultDbInjector.renewer.containerPorts.metrics=8888
neg "webhook port moved without the Service's targetPort" "ports\[0\].targetPort \(8443\) must be vaultDbInjector.injector.containerPorts.webhook \(9443\)" --set vaultDbInjector.injector.containerPorts.webhook=9443
neg "container port out of range" "containerPorts/webhook.*(minimum|maximum)" --set vaultDbInjector.injector.containerPorts.webhook=70000
neg "certificate IP SAN not an address" "ipAddresses.*(pattern|does not match)" --set 'webhook.tls.generate.ipAddresses={vdbi.local}'
run "webhook.url replaces the Service in clientConfig; the generated certificate names its IP" bash -c "
  '$helm' template vdbi-test '$chart' --namespace '$ns' --set webhook.url=https://127.0.0.1:8443/mutate \
    --set 'webhook.tls.generate.ipAddresses={127.0.0.1}' --set 'webhook.tls.generate.extraDnsNames={localhost}' |
  python3 -c '
import base64, subprocess, sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
mwc = next(d for d in docs if d[\"kind\"] == \"MutatingWebhookConfiguration\")
cc = mwc[\"webhooks\"][0][\"clientConfig\"]
assert cc.get(\"url\") == \"https://127.0.0.1:8443/mutate\" and \"service\" not in cc and cc[\"caBundle\"], cc
sec = next(d for d in docs if d[\"kind\"] == \"Secret\" and d[\"metadata\"][\"name\"].endswith(\"-tls\"))
pem = base64.b64decode(sec[\"data\"][\"tls.crt\"])
san = subprocess.run([\"openssl\", \"x509\", \"-noout\", \"-ext\", \"subjectAltName\"], input=pem, capture_output=True, check=True).stdout.decode()
assert \"IP Address:127.0.0.1\" in san and \"DNS:localhost\" in san and \"DNS:vdbi-test.\" in san, san
'"

echo "== plain manifests (deploy/manifests)"
run "deploy/manifests are up to date (chart/render-manifests.sh --check)" "$chart/render-manifests.sh" --check
run "deploy/manifests/webhook-tls.sh makes a certificate the CA verifies, for the Service names" bash -c "
  set -e
  NAMESPACE=vdbi '$repo/deploy/manifests/webhook-tls.sh' --print '$work/wtls' > '$work/wtls.yaml'
  openssl verify -CAfile '$work/wtls/ca.crt' '$work/wtls/tls.crt'
  openssl x509 -in '$work/wtls/tls.crt' -noout -ext subjectAltName | grep -q 'DNS:vdbi.vdbi.svc,'"

echo "== kube-apiserver (server-side apply, dryRun=All, fieldValidation=Strict)"
env_file="${VDBI_PLATFORM_ENV:-$repo/.platform/env}"
if $offline; then
  sk "server-side dry-run of every rendered object" "--offline"
elif [ ! -r "$env_file" ]; then
  ko "platform env file $env_file (start the platform: platform/vdbi-platform up)"
else
  set -a; . "$env_file"; set +a
  ns="${VDBI_SYSTEM_NAMESPACE:-vdbi-system}"
  if dryrun="$("$repo/platform/tools/helm/ensure.sh" kube-dryrun 2> "$work/build.log")"; then
    crds="monitoring.coreos.com/ServiceMonitor,monitoring.coreos.com/PrometheusRule,cert-manager.io/Certificate,cert-manager.io/Issuer"
    for c in "${cases[@]}"; do
      [ -s "$work/$c.yaml" ] || continue
      if "$dryrun" --namespace "$ns" --allow-missing "$crds" --quiet "$work/$c.yaml" > "$work/out" 2>&1; then
        ok "apiserver accepts every object ($c): $(tail -1 "$work/out" | sed 's/^kube-dryrun: //')"
      else
        ko "apiserver accepts every object ($c)" "$work/out"
      fi
    done
    # What an operator runs: helm's own server-side dry-run (the chart's kubeVersion against the
    # apiserver's real version, lookups, every object validated by the apiserver).
    for c in default example-projected-nri example-legacy go-3.2.3; do
      case_args "$c"
      run "helm install --dry-run=server ($c)" "$helm" install vdbi-dryrun "$chart" --namespace "$ns" --dry-run=server "${args[@]}"
    done
    for f in "$repo"/deploy/manifests/*.yaml; do
      b="$(basename "$f")"
      if "$dryrun" --ensure-namespaces --quiet "$f" > "$work/out" 2>&1; then
        ok "apiserver accepts deploy/manifests/$b (Pod Security level of its namespace enforced, warnings fail): $(tail -1 "$work/out" | sed 's/^kube-dryrun: //')"
      else
        ko "apiserver accepts deploy/manifests/$b" "$work/out"
      fi
    done
    # The generated certificate is reused across upgrades (lookup) and renewed near expiry with a
    # caBundle that trusts both CAs.
    rel=vdbi-tlscheck
    tpl=("$helm" template "$rel" "$chart" --namespace "$ns" --dry-run=server --show-only templates/tls.yaml --show-only templates/webhook.yaml)
    if "${tpl[@]}" > "$work/tls1.yaml" 2> "$work/err" \
       && python3 - "$work/tls1.yaml" > "$work/secret.yaml" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "Secret":
        print(yaml.safe_dump(d))
PY
    then
      if "$dryrun" --mode apply --quiet "$work/secret.yaml" > "$work/out" 2>&1 \
         && "${tpl[@]}" > "$work/tls2.yaml" 2>> "$work/out"; then
        run "generated webhook certificate is kept across upgrades (lookup)" \
          python3 "$tests/check_rendered.py" tls-same "$work/tls1.yaml" "$work/tls2.yaml"
        sed -i 's/^\(    vdbi\/cert-not-after: \).*/\1"2000-01-01T00:00:00Z"/' "$work/secret.yaml"
        if "$dryrun" --mode apply --quiet "$work/secret.yaml" > "$work/out" 2>&1 \
           && "${tpl[@]}" > "$work/tls3.yaml" 2>> "$work/out"; then
          run "generated webhook certificate is renewed near expiry; caBundle trusts old and new CA" \
            python3 "$tests/check_rendered.py" tls-rotated "$work/tls2.yaml" "$work/tls3.yaml"
        else
          ko "renewal render" "$work/out"
        fi
      else
        ko "apply the generated Secret, render again" "$work/out"
      fi
      "$dryrun" --mode delete --quiet "$work/secret.yaml" > /dev/null 2>&1 || true
    else
      ko "helm template --dry-run=server (lookup)" "$work/err"
    fi
  else
    ko "build kube-dryrun" "$work/build.log"
  fi
fi

echo
if [ "$fail" -gt 0 ]; then
  echo "chart tests: failed: ${failed_names[*]}"
fi
echo "chart: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
