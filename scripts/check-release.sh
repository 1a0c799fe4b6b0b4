#!/usr/bin/env bash
# Checks the release artifacts `platform/vdbi-platform release` wrote to dist/:
#   the checksums; the binary tarball (static vdbi that prints its version, with no test-support
#   symbols); the packaged chart
#   (`helm install --dry-run=server` against the platform's apiserver); the image archive (an OCI
#   layout naming localhost/vdbi:<version>); the SBOM (CycloneDX JSON listing vdbi's crates).
# Usage: scripts/check-release.sh [DIST]   (default <repo>/dist; the apiserver from
# $VDBI_PLATFORM_ENV, else <repo>/.platform/env). Exits 1 on any failure.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dist="${1:-$repo/dist}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)"
chart_version="$(sed -n 's/^version: //p' "$repo/chart/Chart.yaml")"
name="vdbi-$version-linux-$(uname -m)"
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS  $1"; }
ko() {
  fail=$((fail + 1)); echo "FAIL  $1"
  [ -s "${2:-/dev/null}" ] && sed 's/^/      /' "$2" | tail -20
}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$dist" && sha256sum -c --quiet "vdbi-$version.SHA256SUMS" && sha256sum -c --quiet "$name.tar.gz.sha256") \
  > "$work/out" 2>&1 && ok "checksums (SHA256SUMS, $name.tar.gz.sha256)" || ko "checksums" "$work/out"
n="$(wc -l < "$dist/vdbi-$version.SHA256SUMS")"
[ "$n" -ge 5 ] && ok "SHA256SUMS covers $n files" || ko "SHA256SUMS covers $n files"

if tar -C "$work" -xzf "$dist/$name.tar.gz" && [ -x "$work/$name/vdbi" ] \
   && out="$("$work/$name/vdbi" --version)" && ! LC_ALL=C readelf -l "$work/$name/vdbi" | grep -q interpreter; then
  ok "$name.tar.gz: static vdbi, $out"
else
  ko "$name.tar.gz"
fi

# Test support is dev-only. The release binary has no symbol table, but it keeps the source
# paths of the code it links (panic locations): the nri crate's own files are there (the check
# can see), and no file of the testkit crate or of nri's runtime-side test peer is.
if [ -x "$work/$name/vdbi" ] && grep -qa 'crates/nri/src/stub\.rs' "$work/$name/vdbi" \
   && ! grep -qa -e 'vdbi-testkit/src' -e 'vdbi_testkit' -e 'nri/src/runtime_peer' "$work/$name/vdbi"; then
  ok "$name.tar.gz: no test-support code (vdbi-testkit, nri runtime_peer)"
else
  ko "$name.tar.gz: test-support code in the binary, or no source paths to check"
fi

helm="$("$repo/platform/tools/helm/ensure.sh" helm 2> "$work/out")" || { ko "helm" "$work/out"; helm=false; }
env_file="${VDBI_PLATFORM_ENV:-$repo/.platform/env}"
if [ -r "$env_file" ]; then
  (set -a; . "$env_file"; set +a
   "$helm" install vdbi-release-check "$dist/vdbi-chart-$chart_version.tgz" --namespace "${VDBI_SYSTEM_NAMESPACE:-vdbi-system}" \
     --dry-run=server -f "$repo/chart/examples/projected-nri.yaml") > "$work/out" 2>&1 \
    && ok "vdbi-chart-$chart_version.tgz: helm install --dry-run=server against the apiserver" \
    || ko "helm install --dry-run=server of the packaged chart" "$work/out"
else
  ko "platform env $env_file (platform/vdbi-platform up)"
fi

python3 - "$dist/vdbi-$version-image.oci.tar" "localhost/vdbi:$version" > "$work/out" 2>&1 <<'PY' \
  && ok "vdbi-$version-image.oci.tar: OCI archive of localhost/vdbi:$version, $(du -h "$dist/vdbi-$version-image.oci.tar" | cut -f1)" \
  || ko "image archive" "$work/out"
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
index = json.load(t.extractfile("index.json"))
names = [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index["manifests"]]
assert sys.argv[2] in names or sys.argv[2].split(":")[-1] in names, names
manifest = json.load(t.extractfile("blobs/" + index["manifests"][0]["digest"].replace(":", "/")))
config = json.load(t.extractfile("blobs/" + manifest["config"]["digest"].replace(":", "/")))
assert config["config"]["User"] == "65534:65534", config["config"]
assert config["config"]["Entrypoint"] == ["/vdbi"], config["config"]
PY

python3 - "$dist/vdbi-$version.cdx.json" > "$work/out" 2>&1 <<'PY' && ok "vdbi-$version.cdx.json: $(cat "$work/out")" || ko "SBOM" "$work/out"
import json, sys
b = json.load(open(sys.argv[1]))
assert b["bomFormat"] == "CycloneDX" and b["specVersion"] == "1.5"
assert b["metadata"]["component"]["name"] == "vdbi"
names = {c["name"] for c in b["components"]}
for crate in ("tokio", "actix-web", "rustls", "kube", "prometheus", "slog"):
    assert crate in names, crate
assert all(c["purl"].startswith("pkg:cargo/") for c in b["components"])
assert sum(1 for c in b["components"] if c.get("hashes")) > 100
print(f"CycloneDX 1.5, {len(b['components'])} crates")
PY
echo "release: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
