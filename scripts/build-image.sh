#!/usr/bin/env bash
# Builds vdbi's container image with no container registry: a static release build of vdbi
# (cargo, glibc target, `+crt-static`), its root filesystem laid out by scripts/image-rootfs.sh,
# then Debian's buildah builds the Dockerfile's `image-from-rootfs` stage (FROM scratch, nothing
# pulled, no daemon) and writes it as an OCI archive.
#
# Usage: scripts/build-image.sh        prints the archive's path on stdout (progress on stderr)
#
#   output     ${VDBI_CACHE_DIR:-$HOME/.cache/vdbi}/image/vdbi-image.oci.tar ($VDBI_IMAGE_OUT)
#   reference  localhost/vdbi:dev ($VDBI_IMAGE_REF), the name `ctr images import` gives it
#   binary     $CARGO_TARGET_DIR (default <repo>/target)/x86_64-unknown-linux-gnu/release/vdbi
#
# Idempotent: cargo rebuilds only what changed, and the archive is rewritten only when the binary,
# the Dockerfile, the root filesystem script, the CA bundle or the reference changed (a no-op run
# takes seconds). Needs root or sudo the first time, to install buildah and ca-certificates.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${VDBI_CACHE_DIR:-$HOME/.cache/vdbi}"
out_dir="$cache/image"
out="${VDBI_IMAGE_OUT:-$out_dir/vdbi-image.oci.tar}"
ref="${VDBI_IMAGE_REF:-localhost/vdbi:dev}"
target="$(uname -m)-unknown-linux-gnu"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
bin="$target_dir/$target/release/vdbi"
ca=/etc/ssl/certs/ca-certificates.crt

log() { printf '[build-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# 1. Debian's buildah and CA bundle.
missing=()
command -v buildah >/dev/null || missing+=(buildah)
[[ -s "$ca" ]] || missing+=(ca-certificates)
command -v readelf >/dev/null || missing+=(binutils)
if ((${#missing[@]})); then
  sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  log "apt-get install ${missing[*]}"
  "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    die "apt-get install ${missing[*]} failed"
fi

# 2. The static release binary (cargo prints its own progress; ~10 minutes on 2 cores from cold,
# seconds when nothing changed). RUSTFLAGS only for the target: build scripts and proc macros
# stay dynamic, and the host's other builds keep their cache.
log "cargo build --release --bin vdbi --target $target (static)"
(cd "$repo" && CARGO_TARGET_DIR="$target_dir" \
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --locked --bin vdbi --target "$target") >&2 || die "cargo build failed"

# 3. Anything to do?
inputs="$( {
  sha256sum "$bin" "$repo/Dockerfile" "$repo/scripts/image-rootfs.sh" "$ca" | awk '{print $1}'
  echo "$ref"
} | sha256sum | cut -c1-32)"
mkdir -p "$out_dir" "$(dirname "$out")"
if [[ -s "$out" && -f "$out.inputs" && "$(cat "$out.inputs")" == "$inputs" ]]; then
  log "image unchanged: $out"
  printf '%s\n' "$out"
  exit 0
fi

# 4. Root filesystem, then buildah (private storage under the cache: nothing touches the
# machine's containers storage; vfs needs no overlay support).
work="$(mktemp -d "$out_dir/.build.XXXXXX")"
storage=(--root "$out_dir/storage" --runroot "$work/run" --storage-driver vfs)
cleanup() {
  buildah "${storage[@]}" rmi -f "$ref" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$repo/scripts/image-rootfs.sh" "$work/rootfs" "$bin" "$ca"
mkdir -p "$work/context"
epoch="$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)"
log "buildah bud --target image-from-rootfs (FROM scratch; nothing pulled)"
buildah "${storage[@]}" bud --quiet --pull=never --target image-from-rootfs \
  --build-context rootfs="$work/rootfs" --timestamp "$epoch" \
  -f "$repo/Dockerfile" -t "$ref" "$work/context" >&2 || die "buildah bud failed"
rm -f "$out.tmp"
buildah "${storage[@]}" push --quiet "$ref" "oci-archive:$out.tmp:$ref" >&2 || die "buildah push failed"
mv -f "$out.tmp" "$out"
printf '%s\n' "$inputs" >"$out.inputs"
log "image $ref: $(du -h "$out" | cut -f1) archive, $(du -h "$bin" | cut -f1) binary -> $out"
printf '%s\n' "$out"
