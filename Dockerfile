# syntax=docker/dockerfile:1.7
#
# One image for every vdbi component: `mode` in the config file (--config) picks injector,
# renewer, revoker, nri or all.
#
#   docker build -t vdbi:0.1.0 .
#
# Runtime: gcr.io/distroless/cc-debian12 (glibc, libgcc_s, CA certificates, tzdata; no shell, no
# package manager). Why glibc and not a static musl binary on distroless/static:
#   - musl's allocator is markedly slower under the multi-threaded allocation pattern of
#     tokio/actix (webhook bursts, NRI CreateContainer storms), and vdbi ships no custom allocator;
#   - ring (rustls' crypto) compiles its C/asm with the builder's gcc against glibc with no extra
#     cross toolchain;
#   - builder (rust:*-bookworm) and runtime (debian12) share glibc 2.36, so the binary's symbol
#     versions always resolve; scripts/check-dockerfile.sh checks that.
# The process runs as 65534:65534 (nobody) and needs no writable path: the charts run it with a
# read-only root filesystem (plus an in-memory /tmp). The NRI DaemonSet overrides the user to root
# because the runtime's NRI socket is root-only.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_STRIP=symbols
COPY . .
# --locked: the image is built from exactly Cargo.lock. Cache mounts keep the registry and target
# directory between builds; the binary is copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin vdbi \
 && install -D -m 0755 target/release/vdbi /out/vdbi

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="vdbi" \
      org.opencontainers.image.description="Per-pod short-lived database credentials from Vault/OpenBao for Kubernetes (vault-db-injector compatible)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
COPY --from=builder /out/vdbi /vdbi
USER 65534:65534
# webhook (TLS), metrics, health
EXPOSE 8443 8080 8888
ENTRYPOINT ["/vdbi"]
