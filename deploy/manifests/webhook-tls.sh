#!/usr/bin/env bash
# Webhook TLS for the plain manifests (the Helm chart does this itself, see chart/README.md).
#
# Makes a private CA and a serving certificate for the webhook Service, stores them in the
# kubernetes.io/tls Secret the injector mounts (tls.crt, tls.key, ca.crt), and sets the
# MutatingWebhookConfiguration's caBundle when it exists. Idempotent: run it before
# `kubectl apply` (creates the namespace and the Secret) and again after (sets the caBundle).
# An existing Secret is kept unless --renew is given or it expires within RENEW_DAYS; on renewal
# the caBundle trusts both the new and the previous CA, and the injector reloads the new files
# from disk without a restart. The CA key is not kept.
#
# Usage: webhook-tls.sh [--renew]           (needs kubectl and openssl)
#        webhook-tls.sh --print DIR         generate into DIR and print the Secret; no cluster access
# Env: NAMESPACE (vdbi), NAME (vdbi: Service and MutatingWebhookConfiguration), SECRET
#      (vdbi-webhook-tls), DAYS (730), RENEW_DAYS (60), KUBECTL (kubectl)
set -euo pipefail

ns="${NAMESPACE:-vdbi}"
name="${NAME:-vdbi}"
secret="${SECRET:-vdbi-webhook-tls}"
days="${DAYS:-730}"
renew_days="${RENEW_DAYS:-60}"
kubectl="${KUBECTL:-kubectl}"

generate() { # dir
  local d="$1"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$d/ca.key" -sha256 -days "$((days + 365))" -subj "/CN=${name}-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$d/ca.crt" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/tls.ec.key" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$d/tls.ec.key" -out "$d/tls.key"
  openssl req -new -key "$d/tls.key" -subj "/CN=${name}.${ns}.svc" -out "$d/tls.csr" 2>/dev/null
  cat > "$d/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:${name},DNS:${name}.${ns},DNS:${name}.${ns}.svc,DNS:${name}.${ns}.svc.cluster.local
EXT
  openssl x509 -req -in "$d/tls.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -sha256 \
    -days "$days" -extfile "$d/ext.cnf" -out "$d/tls.crt" 2>/dev/null
  rm -f "$d/ca.key" "$d/tls.ec.key" "$d/tls.csr" "$d/ext.cnf" "$d/ca.srl"
  chmod 0600 "$d/tls.key"
}

secret_yaml() { # dir
  local d="$1"
  cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: ${secret}
  namespace: ${ns}
  labels:
    app.kubernetes.io/name: vdbi
    app.kubernetes.io/instance: ${name}
    app.kubernetes.io/component: injector
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 < "$d/tls.crt")
  tls.key: $(base64 -w0 < "$d/tls.key")
  ca.crt: $(base64 -w0 < "$d/ca.crt")
YAML
}

if [ "${1:-}" = "--print" ]; then
  dir="${2:?usage: webhook-tls.sh --print DIR}"
  mkdir -p "$dir"
  generate "$dir"
  secret_yaml "$dir"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077

"$kubectl" get namespace "$ns" >/dev/null 2>&1 || "$kubectl" create namespace "$ns"

previous_ca=""
need_new=true
if "$kubectl" -n "$ns" get secret "$secret" >/dev/null 2>&1; then
  "$kubectl" -n "$ns" get secret "$secret" -o jsonpath='{.data.tls\.crt}' | base64 -d > "$work/old.crt" || true
  "$kubectl" -n "$ns" get secret "$secret" -o jsonpath='{.data.ca\.crt}' | base64 -d > "$work/old-ca.crt" || true
  if [ "${1:-}" != "--renew" ] && [ -s "$work/old.crt" ] && [ -s "$work/old-ca.crt" ] \
     && openssl x509 -checkend "$((renew_days * 86400))" -noout -in "$work/old.crt" >/dev/null; then
    need_new=false
    cp "$work/old-ca.crt" "$work/ca.crt"
    echo "webhook-tls: Secret ${ns}/${secret} is valid for more than ${renew_days} days: kept"
  else
    previous_ca="$work/old-ca.crt"
  fi
fi

if $need_new; then
  generate "$work"
  secret_yaml "$work" | "$kubectl" apply -f -
  echo "webhook-tls: Secret ${ns}/${secret} written (expires in ${days} days)"
fi

bundle="$work/ca.crt"
if [ -n "$previous_ca" ] && [ -s "$previous_ca" ]; then
  cat "$work/ca.crt" "$previous_ca" > "$work/bundle.crt"
  bundle="$work/bundle.crt"
fi

if "$kubectl" get mutatingwebhookconfiguration "$name" >/dev/null 2>&1; then
  ca_b64="$(base64 -w0 < "$bundle")"
  count="$("$kubectl" get mutatingwebhookconfiguration "$name" -o jsonpath='{range .webhooks[*]}x{end}' | wc -c)"
  patch="["
  for ((i = 0; i < count; i++)); do
    [ "$i" -gt 0 ] && patch+=","
    patch+="{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$ca_b64\"}"
  done
  patch+="]"
  "$kubectl" patch mutatingwebhookconfiguration "$name" --type=json -p "$patch"
  echo "webhook-tls: caBundle of MutatingWebhookConfiguration ${name} set"
else
  echo "webhook-tls: MutatingWebhookConfiguration ${name} not found yet: apply the manifests, then run this again"
fi
