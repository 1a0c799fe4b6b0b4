#!/usr/bin/env bash
# Checks the Dockerfile. With a working container engine it builds the image and inspects it.
# Without one (this project's machines have the docker client only), it says so and checks the
# build stages natively, with the same commands:
#   1. structure: a builder stage on rust:<RUST_VERSION>-bookworm running
#      `cargo build --release --locked --bin vdbi`; a runtime stage on distroless cc-debian12
#      with USER 65534:65534, ENTRYPOINT ["/vdbi"], no ADD of remote URLs, no secret in ENV/ARG;
#   2. toolchain: the native rustc is at least the image's RUST_VERSION and Cargo.toml's
#      rust-version is not above it;
#   3. build context: the files `COPY . .` sends (git-tracked files minus .dockerignore) are copied
#      to a scratch directory and the builder's RUN command runs there, unchanged (so a file the
#      build needs but .dockerignore drops, or a stale Cargo.lock, fails here as in docker build);
#   4. runtime: the binary's shared libraries are all provided by distroless/cc-debian12 (glibc,
#      libgcc_s) and its glibc symbol versions are <= 2.36 (Debian 12);
#   5. non-root, read-only: the binary runs as uid/gid 65534 from / with HOME unset and prints
#      its help, writing nothing.
# Usage: scripts/check-dockerfile.sh [--no-build]   (--no-build: steps 1-2 only)
# Build output goes to ${VDBI_CACHE_DIR:-$HOME/.cache/vdbi}/docker-check-target.
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
  docker run --rm --read-only --cap-drop ALL "$tag" --help >/dev/null && ok "runs read-only, no capabilities" || ko "runs read-only"
  docker image rm "$tag" >/dev/null || true
  finish
fi
echo "no container engine here (docker client only): checking the Dockerfile's build stages natively"

# 1. structure
stage_from() { grep -E "^FROM .* AS $1\$" "$df" | awk '{print $2}'; }
rust_version="$(sed -n 's/^ARG RUST_VERSION=//p' "$df")"
[ "$(stage_from builder)" = 'docker.io/library/rust:${RUST_VERSION}-bookworm' ] && [ -n "$rust_version" ] \
  && ok "builder stage: rust:${rust_version}-bookworm" || ko "builder stage base"
run_cmd="$(awk '/^RUN /,/[^\\]$/' "$df" | sed 's/\\$//' | tr -s ' \n' ' ' | sed 's/.*--mount=type=cache,target=\/src\/target //')"
echo "$run_cmd" | grep -q 'cargo build --release --locked --bin vdbi' && ok "builder runs cargo build --release --locked --bin vdbi" || ko "builder RUN command"
[ "$(stage_from runtime)" = "gcr.io/distroless/cc-debian12:nonroot" ] && ok "runtime stage: distroless cc-debian12:nonroot" || ko "runtime stage base"
[ "$(grep -c '^FROM ' "$df")" = 2 ] && ok "two stages" || ko "stage count"
tail_stage="$(sed -n '/AS runtime$/,$p' "$df")"
echo "$tail_stage" | grep -qx 'USER 65534:65534' && ok "runtime USER 65534:65534" || ko "runtime USER"
echo "$tail_stage" | grep -qx 'ENTRYPOINT \["/vdbi"\]' && ok 'ENTRYPOINT ["/vdbi"]' || ko "ENTRYPOINT"
echo "$tail_stage" | grep -q '^COPY --from=builder /out/vdbi /vdbi$' && ok "runtime gets only the binary" || ko "runtime COPY"
! grep -qE '^ADD +https?://' "$df" && ok "no ADD of remote URLs" || ko "ADD of a remote URL"
! grep -qiE '^(ENV|ARG) .*(TOKEN|PASSWORD|SECRET|DSN)' "$df" && ok "no secret in ENV/ARG" || ko "secret-looking ENV/ARG"
for p in .git target .platform; do
  grep -qx "$p" "$repo/.dockerignore" && ok ".dockerignore drops $p" || ko ".dockerignore lacks $p"
done

# 2. toolchain
ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }
native="$(rustc --version 2>/dev/null | awk '{print $2}')"
msrv="$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")"
[ -n "$native" ] && ver_ge "$native" "$rust_version" && ok "native rustc $native >= image RUST_VERSION $rust_version" \
  || ko "native rustc ${native:-missing} older than the image's $rust_version"
[ -z "$msrv" ] || { ver_ge "$rust_version" "$msrv" && ok "Cargo.toml rust-version $msrv <= $rust_version" || ko "rust-version $msrv above $rust_version"; }

if ! $build; then echo "(--no-build: context build, runtime libraries and non-root run not checked)"; finish; fi

# 3. build context and the builder's command
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
target="${VDBI_CACHE_DIR:-$HOME/.cache/vdbi}/docker-check-target"
mkdir -p "$target"
ln -s "$target" "$ctx/target"
if (cd "$ctx" && CARGO_TERM_COLOR=never CARGO_PROFILE_RELEASE_STRIP=symbols nice cargo build --release --locked --bin vdbi) > "$ctx.build.log" 2>&1; then
  ok "builder command succeeds in the Docker build context"
else
  tail -30 "$ctx.build.log"; ko "builder command in the Docker build context"; finish
fi
bin="$target/release/vdbi"

# 4. runtime libraries
allowed='^(linux-vdso\.so\.1|libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1)$'
needed="$(objdump -p "$bin" | awk '/NEEDED/ {print $2}')"
bad="$(echo "$needed" | grep -vE "$allowed" || true)"
[ -z "$bad" ] && ok "shared libraries all in distroless/cc: $(echo $needed)" || ko "libraries missing from distroless/cc: $bad"
maxglibc="$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)"
ver_ge 2.36 "${maxglibc:-0}" && ok "glibc symbols up to $maxglibc (Debian 12 has 2.36)" || ko "needs glibc $maxglibc > 2.36"

# 5. non-root, nothing written
cp "$bin" "$ctx/vdbi" && chmod 0755 "$ctx/vdbi" "$ctx"
if (cd / && env -i PATH=/usr/bin:/bin setpriv --reuid 65534 --regid 65534 --clear-groups "$ctx/vdbi" --help) > /dev/null 2>&1; then
  ok "binary runs as 65534:65534 from / with no HOME"
else
  ko "binary as 65534:65534"
fi
finish
