# syntax=docker/dockerfile:1.7
#
# One image for every vdbi component: `mode` in the config file (--config) picks injector,
# renewer, revoker, nri or all.
#
#   docker build -t vdbi:0.1.0 .                     # with a registry: Rust image builds it all
#   scripts/build-image.sh                           # without: buildah, stage `image-from-rootfs`
#
# The image is FROM scratch: a statically linked vdbi (glibc, `-C target-feature=+crt-static`),
# Debian's CA bundle, passwd/group entries for 65534 (nobody) and root, nsswitch.conf and /tmp,
# laid out by scripts/image-rootfs.sh in both builds. Why static glibc rather than musl: musl's
# allocator is markedly slower under tokio/actix's multi-threaded allocation pattern, and ring
# (rustls' crypto) builds with the system gcc with no cross toolchain. No shell, no package
# manager, no dynamic loader: nothing in the image but vdbi and the files it reads.
# The process runs as 65534:65534 and needs no writable path: the chart runs it with a read-only
# root filesystem (plus an in-memory /tmp). The NRI DaemonSet overrides the user to root because
# the runtime's NRI socket is root-only.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
COPY . .
# --locked: the image is built from exactly Cargo.lock. Cache mounts keep the registry and target
# directory between builds; the root filesystem is laid out outside the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(rustc -vV | sed -n 's/^host: //p')" \
 && cargo build --release --locked --bin vdbi --target "$target" \
 && scripts/image-rootfs.sh /rootfs "target/$target/release/vdbi"

# Built without a registry (scripts/build-image.sh): the same root filesystem, laid out on the
# host from a static build and given as the named build context `rootfs`:
#   buildah bud --target image-from-rootfs --build-context rootfs=DIR -f Dockerfile EMPTY_DIR
# A plain `docker build .` never builds this stage (the default target is the last stage).
FROM scratch AS image-from-rootfs
COPY --from=rootfs / /
LABEL org.opencontainers.image.title="vdbi" \
      org.opencontainers.image.description="Per-pod short-lived database credentials from Vault/OpenBao for Kubernetes (vault-db-injector compatible)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 65534:65534
# webhook (TLS), metrics, health
EXPOSE 8443 8080 8888
ENTRYPOINT ["/vdbi"]

FROM scratch AS runtime
COPY --from=builder /rootfs/ /
LABEL org.opencontainers.image.title="vdbi" \
      org.opencontainers.image.description="Per-pod short-lived database credentials from Vault/OpenBao for Kubernetes (vault-db-injector compatible)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 65534:65534
# webhook (TLS), metrics, health
EXPOSE 8443 8080 8888
ENTRYPOINT ["/vdbi"]
