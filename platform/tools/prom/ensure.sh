#!/usr/bin/env bash
# Builds (once) and prints the path of promtool, from this Go module (version in go.mod), for the
# alerting-rule unit tests (chart/alerts/tests, run by chart/tests/run.sh).
# Cached in ${VDBI_CACHE_DIR:-$HOME/.cache/vdbi}/bin as promtool-<version>, built with
# CGO_ENABLED=0 -trimpath and `-tags remove_all_sd` (Prometheus' own build tag that leaves out the
# cloud service-discovery plugins: rule tests need none, and the build is much shorter).
#
# Usage: ensure.sh promtool     prints the binary path (build log on stderr)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${VDBI_CACHE_DIR:-$HOME/.cache/vdbi}/bin"
mkdir -p "$cache"

case "${1:-}" in
  promtool)
    version="$(awk '$1 == "github.com/prometheus/prometheus" { print $2 }
                   $1 == "require" && $2 == "github.com/prometheus/prometheus" { print $3 }' "$here/go.mod")"
    [ -n "$version" ] || { echo "ensure.sh: github.com/prometheus/prometheus not in go.mod" >&2; exit 1; }
    out="$cache/promtool-$version"
    if [ ! -x "$out" ]; then
      command -v go >/dev/null 2>&1 || { echo "ensure.sh: Go (>= 1.25) is required to build promtool" >&2; exit 1; }
      tmp="$(mktemp "$cache/.promtool.XXXXXX")"
      echo "ensure.sh: building promtool $version -> $out (one-off)" >&2
      start=$SECONDS
      if ! (cd "$here" && CGO_ENABLED=0 nice go build -tags remove_all_sd -trimpath -ldflags "-s -w" \
              -o "$tmp" github.com/prometheus/prometheus/cmd/promtool) >&2; then
        rm -f "$tmp"
        echo "ensure.sh: building promtool failed" >&2
        exit 1
      fi
      chmod 0755 "$tmp"
      mv -f "$tmp" "$out"
      echo "ensure.sh: promtool built in $((SECONDS - start)) s" >&2
    fi
    echo "$out"
    ;;
  *)
    echo "usage: $0 promtool" >&2
    exit 2
    ;;
esac
