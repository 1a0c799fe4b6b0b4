#!/usr/bin/env bash
# Builds vdbi's image without a registry (scripts/build-image.sh) and runs it on the local
# containerd node the way the chart runs it — uid/gid 65534, read-only root filesystem, the
# config mounted read-only:
#   1. the image: OCI archive imported by `ctr images import`, its size (<= 25 MB unpacked);
#   2. `vdbi --version`;
#   3. `vdbi check-config` of the config below;
#   4. the daemon (mode injector, legacy) logs in to the platform's OpenBao with a token of vdbi's
#      injector ServiceAccount and loads its webhook certificate: /readyz answers 200; the
#      process runs as 65534; SIGTERM stops it.
# Needs the platform and the node: $VDBI_PLATFORM_ENV (else <repo>/.platform/env) and
# $VDBI_NODE_ENV (else <repo>/.platform/containerd/env); `platform/vdbi-platform test` sets both.
# Prints one line per check; exits 1 on any failure.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS  $1"; }
ko() {
  fail=$((fail + 1)); echo "FAIL  $1"
  [ -s "${2:-/dev/null}" ] && sed 's/^/      /' "$2" | tail -30
}
finish() { echo "image: $pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit $?; }

platform_env="${VDBI_PLATFORM_ENV:-$repo/.platform/env}"
node_env="${VDBI_NODE_ENV:-$repo/.platform/containerd/env}"
[ -r "$platform_env" ] || { ko "platform env $platform_env (platform/vdbi-platform up)"; finish; }
[ -r "$node_env" ] || { ko "node env $node_env (platform/vdbi-node up)"; finish; }
set -a
. "$platform_env"
. "$node_env"
set +a

work="$(mktemp -d)"
id="vdbi-image-check-$$"
ctr_() { "$VDBI_NODE_CTR" --address "$VDBI_NODE_CONTAINERD_SOCK" --namespace k8s.io "$@"; }
cleanup() {
  ctr_ tasks kill -s KILL "$id" >/dev/null 2>&1 || true
  ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
  ctr_ containers delete "$id" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. build and import
# (its progress, cargo's included, goes to stderr: the first build takes minutes)
if archive="$("$repo/scripts/build-image.sh")"; then
  ok "scripts/build-image.sh: $(du -h "$archive" | cut -f1) OCI archive (no registry)"
else
  ko "scripts/build-image.sh"; finish
fi
ref="${VDBI_IMAGE_REF:-localhost/vdbi:dev}"
if ctr_ images import --snapshotter "$VDBI_NODE_SNAPSHOTTER" "$archive" > "$work/import.log" 2>&1 \
   && ctr_ images ls -q | grep -qx "$ref"; then
  ok "ctr images import: $ref"
else
  ko "ctr images import of $archive as $ref" "$work/import.log"; finish
fi
unpacked="$(ctr_ images usage --snapshotter "$VDBI_NODE_SNAPSHOTTER" "$ref" 2>/dev/null | awk 'NR > 1 {s = $2 " " $3} END {print s}')"
size_bytes="$(python3 - "$archive" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
blob = lambda d: t.extractfile("blobs/" + d.replace(":", "/"))
index = json.load(t.extractfile("index.json"))
manifest = json.load(blob(index["manifests"][0]["digest"]))
total = 0
for layer in manifest["layers"]:
    mode = "r|gz" if layer["mediaType"].endswith("gzip") else "r|"
    with tarfile.open(fileobj=blob(layer["digest"]), mode=mode) as lt:
        total += sum(m.size for m in lt if m.isfile())
print(total)
PY
)"
if [ -n "$size_bytes" ] && [ "$size_bytes" -le $((25 * 1024 * 1024)) ]; then
  ok "image files $((size_bytes / 1024)) KiB unpacked (<= 25 MB)${unpacked:+; containerd snapshot $unpacked}"
else
  ko "image size ${size_bytes:-unknown} bytes unpacked (> 25 MB)"
fi

run() { # run NAME ARGS...: a one-off container as the chart runs vdbi
  ctr_ run --rm --read-only --user 65534:65534 --net-host --snapshotter "$VDBI_NODE_SNAPSHOTTER" \
    --mount "type=bind,src=$work/config,dst=/config,options=rbind:ro" "$ref" "$id" "$@"
}

# The config: a token of vdbi's injector ServiceAccount (legacy login), a webhook certificate.
mkdir -p "$work/config"
code="$(curl -sS --noproxy '*' -o "$work/tr.json" -w '%{http_code}' -X POST \
  --cacert "$VDBI_KUBE_CA_FILE" --cert "$VDBI_KUBE_ADMIN_CERT_FILE" --key "$VDBI_KUBE_ADMIN_KEY_FILE" \
  -H 'Content-Type: application/json' \
  --data '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"audiences":["vault"],"expirationSeconds":600}}' \
  "$VDBI_KUBE_SERVER/api/v1/namespaces/$VDBI_SYSTEM_NAMESPACE/serviceaccounts/vdbi-injector/token")"
[ "$code" = 201 ] || { ko "TokenRequest for vdbi-injector (HTTP $code)"; finish; }
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"]["token"], end="")' "$work/tr.json" > "$work/config/token"
rm -f "$work/tr.json"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=vdbi \
  -addext subjectAltName=DNS:vdbi.vdbi-system.svc -keyout "$work/config/tls.key" -out "$work/config/tls.crt" 2>/dev/null
read -r p1 p2 p3 < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
cat > "$work/config/config.yaml" <<EOF
mode: injector
vaultAddress: $VAULT_ADDR
vaultAuthPath: $VDBI_K8S_AUTH_MOUNT
kubeRole: $VDBI_LEGACY_KUBE_ROLE
vaultSecretName: $VDBI_KV_MOUNT
vaultSecretPrefix: image-check
kubeTokenPath: /config/token
certFile: /config/tls.crt
keyFile: /config/tls.key
webhookListen: 127.0.0.1:$p1
metricsListen: 127.0.0.1:$p2
healthListen: 127.0.0.1:$p3
EOF
chown -R 65534:65534 "$work/config"
chmod 0700 "$work/config"
chmod 0600 "$work/config"/*

# 2. --version
if out="$(run /vdbi --version 2> "$work/out")" && echo "$out" | grep -q '^vdbi '; then
  ok "vdbi --version as 65534, read-only: $out"
else
  echo "$out" >> "$work/out"; ko "vdbi --version" "$work/out"
fi

# 3. check-config
if run /vdbi check-config --config /config/config.yaml > "$work/out" 2>&1; then
  ok "vdbi check-config --config /config/config.yaml"
else
  ko "vdbi check-config" "$work/out"
fi

# 4. the daemon, until /readyz
ctr_ run -d --read-only --user 65534:65534 --net-host --snapshotter "$VDBI_NODE_SNAPSHOTTER" \
  --log-uri "file://$work/daemon.log" \
  --mount "type=bind,src=$work/config,dst=/config,options=rbind:ro" \
  "$ref" "$id" /vdbi --config /config/config.yaml > "$work/out" 2>&1 || { ko "ctr run -d" "$work/out"; finish; }
ready=false
deadline=$((SECONDS + 60))
while [ "$SECONDS" -lt "$deadline" ]; do
  if [ "$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p3/readyz")" = 200 ]; then
    ready=true; break
  fi
  ctr_ tasks ls | awk -v id="$id" '$1 == id {print $3}' | grep -q RUNNING || break
  sleep 0.2
done
if $ready; then ok "daemon in the image reaches /readyz (Vault login against the platform, certificate loaded)"; else ko "daemon /readyz" "$work/daemon.log"; fi
pid="$(ctr_ tasks ls | awk -v id="$id" '$1 == id {print $2}')"
uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)"
[ "$uid" = 65534 ] && ok "daemon runs as uid 65534" || ko "daemon uid ${uid:-unknown}"
ctr_ tasks kill -s TERM "$id" > /dev/null 2>&1
stopped=false
deadline=$((SECONDS + 20))
while [ "$SECONDS" -lt "$deadline" ]; do
  ctr_ tasks ls | awk -v id="$id" '$1 == id {print $3}' | grep -q RUNNING || { stopped=true; break; }
  sleep 0.2
done
$stopped && ok "SIGTERM stops the daemon" || ko "daemon still running 20 s after SIGTERM" "$work/daemon.log"
finish
