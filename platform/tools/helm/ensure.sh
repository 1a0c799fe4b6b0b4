#!/usr/bin/env bash
# Builds (once) and prints the paths of the chart tooling from this Go module:
#   helm        helm.sh/helm/v3/cmd/helm, version from go.mod
#   kube-dryrun ./cmd/kube-dryrun (server-side dry-run apply against a real apiserver)
# Binaries are cached in ${VDBI_CACHE_DIR:-$HOME/.cache/vdbi}/bin as helm-<version> and
# kube-dryrun-<hash of its sources and go.sum>, built with CGO_ENABLED=0 -trimpath.
#
# Usage: ensure.sh helm|kube-dryrun      prints the binary path (build log on stderr)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${VDBI_CACHE_DIR:-$HOME/.cache/vdbi}/bin"
mkdir -p "$cache"

need_go() {
  command -v go >/dev/null 2>&1 || { echo "ensure.sh: Go (>= 1.24) is required to build $1" >&2; exit 1; }
}

build() { # name out pkg [ldflags]
  local name="$1" out="$2" pkg="$3" ldflags="${4:-}" tmp
  need_go "$name"
  tmp="$(mktemp "$cache/.${name}.XXXXXX")"
  echo "ensure.sh: building $name -> $out (one-off, a few minutes on 2 cores)" >&2
  if ! (cd "$here" && CGO_ENABLED=0 nice go build -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg") >&2; then
    rm -f "$tmp"
    echo "ensure.sh: building $name failed" >&2
    exit 1
  fi
  chmod 0755 "$tmp"
  mv -f "$tmp" "$out"
}

case "${1:-}" in
  helm)
    version="$(awk '$1 == "helm.sh/helm/v3" { print $2 }' "$here/go.mod")"
    [ -n "$version" ] || { echo "ensure.sh: helm.sh/helm/v3 not in go.mod" >&2; exit 1; }
    # Same -X flags as helm's Makefile: the version `helm version` prints, and the Kubernetes
    # version `helm template`/`helm lint` assume (from the k8s.io modules helm is built with).
    kminor="$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2] }' "$here/go.mod")"
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kminor"
    done
    out="$cache/helm-$version"
    [ -x "$out" ] || build helm "$out" helm.sh/helm/v3/cmd/helm "$ldflags"
    echo "$out"
    ;;
  kube-dryrun)
    hash="$(cd "$here" && cat go.mod go.sum cmd/kube-dryrun/*.go | sha256sum | cut -c1-12)"
    out="$cache/kube-dryrun-$hash"
    [ -x "$out" ] || build kube-dryrun "$out" ./cmd/kube-dryrun
    echo "$out"
    ;;
  *)
    echo "usage: $0 helm|kube-dryrun" >&2
    exit 2
    ;;
esac
