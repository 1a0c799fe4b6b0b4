#!/usr/bin/env bash
# Checks the Dockerfile. With a working Docker engine it builds the image and inspects it.
# Without one (this project's machines reach no container registry), it checks the structure and,
# with --build, runs the builder stage's steps natively:
#   1. structure: three stages — `builder` on rust:<RUST_VERSION>-bookworm running
#      `cargo build --release --locked --bin vdbi` for the host target with +crt-static and laying
#      out the root filesystem with scripts/image-rootfs.sh; `image-from-rootfs` (FROM scratch,
#      COPY --from=rootfs, the stage scripts/build-image.sh builds with buildah) and the default
#      `runtime` (FROM scratch, COPY --from=builder /rootfs/), both with the same metadata,
#      USER 65534:65534 and ENTRYPOINT ["/vdbi"]; no ADD of remote URLs, no secret in ENV/ARG;
#   2. toolchain: the native rustc is at least the image's RUST_VERSION and Cargo.toml's
#      rust-version is not above it;
#   3. (--build) build context: the files `COPY . .` sends (git-tracked files minus .dockerignore)
#      are copied to a scratch directory and the builder's cargo build runs there (so a file the
#      build needs but .dockerignore drops, or a stale Cargo.lock, fails here as in docker build);
#   4. (--build) the binary is static (no program interpreter, no shared library) and the root
#      filesystem script accepts it;
#   5. (--build) non-root, read-only: the binary runs as uid/gid 65534 from / with HOME unset.
# The image itself is built and run on containerd by scripts/check-image.sh.
# Usage: scripts/check-dockerfile.sh [--no-build]   (--no-build: steps 1-2 only)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
df="$repo/Dockerfile"
build=true
[ "${1:-}" = "--no-build" ] && build=false
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS  $1"; }
ko() { fail=$((fail + 1)); echo "FAIL  $1"; }
finish() { echo "dockerfile: $pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit $?; }

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "container engine found: building the image"
  tag="vdbi-check:$$"
  if docker build -t "$tag" "$repo"; then ok "docker build"; else ko "docker build"; finish; fi
  [ "$(docker image inspect -f '{{.Config.User}}' "$tag")" = "65534:65534" ] && ok "image user 65534:65534" || ko "image user"
  [ "$(docker image inspect -f '{{json .Config.Entrypoint}}' "$tag")" = '["/vdbi"]' ] && ok "entrypoint /vdbi" || ko "entrypoint"
  docker run --rm --read-only --cap-drop ALL "$tag" --version >/dev/null && ok "runs read-only, no capabilities" || ko "runs read-only"
  docker image rm "$tag" >/dev/null || true
  finish
fi
echo "no container engine here: checking the Dockerfile's structure natively"

# 1. structure
stage_from() { grep -E "^FROM .* AS $1\$" "$df" | awk '{print $2}'; }
stage() { awk -v s="$1" '/^FROM / { on = ($NF == s) } on' "$df"; }
rust_version="$(sed -n 's/^ARG RUST_VERSION=//p' "$df")"
[ "$(grep -c '^FROM ' "$df")" = 3 ] && ok "three stages" || ko "stage count ($(grep -c '^FROM ' "$df"))"
[ "$(stage_from builder)" = 'docker.io/library/rust:${RUST_VERSION}-bookworm' ] && [ -n "$rust_version" ] \
  && ok "builder stage: rust:${rust_version}-bookworm" || ko "builder stage base"
run_cmd="$(stage builder | awk '/^RUN /,/[^\\]$/' | sed 's/\\$//' | tr -s ' \n' ' ')"
echo "$run_cmd" | grep -q 'cargo build --release --locked --bin vdbi --target "$target"' \
  && ok "builder runs cargo build --release --locked --bin vdbi --target <host>" || ko "builder cargo command"
echo "$run_cmd" | grep -q 'scripts/image-rootfs.sh /rootfs "target/$target/release/vdbi"' \
  && ok "builder lays out /rootfs with scripts/image-rootfs.sh" || ko "builder rootfs command"
stage builder | grep -q 'CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"' \
  && ok "builder links statically (+crt-static)" || ko "builder static flags"
[ "$(stage_from image-from-rootfs)" = scratch ] && ok "image-from-rootfs stage FROM scratch" || ko "image-from-rootfs base"
[ "$(stage_from runtime)" = scratch ] && ok "runtime stage FROM scratch" || ko "runtime base"
[ "$(grep '^FROM ' "$df" | tail -1 | awk '{print $NF}')" = runtime ] && ok "runtime is the default (last) stage" || ko "last stage"
stage image-from-rootfs | grep -qx 'COPY --from=rootfs / /' && ok "image-from-rootfs copies the rootfs build context" || ko "image-from-rootfs COPY"
stage runtime | grep -qx 'COPY --from=builder /rootfs/ /' && ok "runtime copies the builder's /rootfs" || ko "runtime COPY"
meta() { stage "$1" | sed '1,2d'; }
[ "$(meta image-from-rootfs)" = "$(meta runtime)" ] && ok "both final stages have the same metadata" || ko "final stages differ"
meta runtime | grep -qx 'USER 65534:65534' && ok "USER 65534:65534" || ko "USER"
meta runtime | grep -qx 'ENTRYPOINT \["/vdbi"\]' && ok 'ENTRYPOINT ["/vdbi"]' || ko "ENTRYPOINT"
! grep -qE '^ADD +https?://' "$df" && ok "no ADD of remote URLs" || ko "ADD of a remote URL"
! grep -qiE '^(ENV|ARG) .*(TOKEN|PASSWORD|SECRET|DSN)' "$df" && ok "no secret in ENV/ARG" || ko "secret-looking ENV/ARG"
for p in .git target .platform; do
  grep -qx "$p" "$repo/.dockerignore" && ok ".dockerignore drops $p" || ko ".dockerignore lacks $p"
done
! grep -qx scripts "$repo/.dockerignore" && ok ".dockerignore keeps scripts/ (image-rootfs.sh)" || ko ".dockerignore drops scripts"

# 2. toolchain
ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }
native="$(rustc --version 2>/dev/null | awk '{print $2}')"
msrv="$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")"
[ -n "$native" ] && ver_ge "$native" "$rust_version" && ok "native rustc $native >= image RUST_VERSION $rust_version" \
  || ko "native rustc ${native:-missing} older than the image's $rust_version"
[ -z "$msrv" ] || { ver_ge "$rust_version" "$msrv" && ok "Cargo.toml rust-version $msrv <= $rust_version" || ko "rust-version $msrv above $rust_version"; }

if ! $build; then echo "(--no-build: context build, static binary and non-root run not checked)"; finish; fi

# 3. build context and the builder's cargo build
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx" "$ctx.build.log"' EXIT
python3 - "$repo" "$ctx" <<'PY'
import fnmatch, os, shutil, subprocess, sys
repo, ctx = sys.argv[1], sys.argv[2]
pats = [l.strip() for l in open(os.path.join(repo, ".dockerignore")) if l.strip() and not l.startswith("#")]
files = subprocess.run(["git", "-C", repo, "ls-files", "-co", "--exclude-standard"], capture_output=True, text=True, check=True).stdout.split()
def ignored(path):
    parts = path.split("/")
    for p in pats:
        p = p.rstrip("/")
        if p.startswith("**/"):
            if fnmatch.fnmatch(parts[-1], p[3:]):
                return True
        elif any(fnmatch.fnmatch("/".join(parts[: i + 1]), p) for i in range(len(parts))):
            return True
    return False
n = 0
for f in files:
    if ignored(f) or not os.path.isfile(os.path.join(repo, f)):
        continue
    dst = os.path.join(ctx, f)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(os.path.join(repo, f), dst)
    n += 1
print(f"build context: {n} files")
PY
target="$(rustc -vV | sed -n 's/^host: //p')"
tdir="${VDBI_CACHE_DIR:-$HOME/.cache/vdbi}/docker-check-target"
mkdir -p "$tdir"
ln -s "$tdir" "$ctx/target"
if (cd "$ctx" && CARGO_TERM_COLOR=never CARGO_PROFILE_RELEASE_STRIP=symbols \
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  nice cargo build --release --locked --bin vdbi --target "$target") > "$ctx.build.log" 2>&1; then
  ok "builder command succeeds in the Docker build context"
else
  tail -30 "$ctx.build.log"; ko "builder command in the Docker build context"; finish
fi
bin="$tdir/$target/release/vdbi"

# 4. static, accepted by the root filesystem script
[ -z "$(objdump -p "$bin" | awk '/NEEDED/ {print $2}')" ] && ok "no shared library needed" || ko "needs shared libraries"
"$repo/scripts/image-rootfs.sh" "$ctx/rootfs" "$bin" && ok "scripts/image-rootfs.sh lays out the root filesystem" || ko "image-rootfs.sh"

# 5. non-root, nothing written
chmod 0755 "$ctx" "$ctx/rootfs"
if (cd / && env -i PATH=/usr/bin:/bin setpriv --reuid 65534 --regid 65534 --clear-groups "$ctx/rootfs/vdbi" --version) > /dev/null 2>&1; then
  ok "binary runs as 65534:65534 from / with no HOME"
else
  ko "binary as 65534:65534"
fi
finish
