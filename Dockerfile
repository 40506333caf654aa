# livechain's container image (docs/container.md). Two stages: the release build with the Rust
# toolchain, then a slim Debian runtime holding the binary, the config and a non-root user.
# scripts/container-check reproduces these steps on a machine without a container engine
# (it reads the RUN lines below; keep them plain shell).
#
#   docker build -t livechain .
#   docker run -p 8545:8545 -v "$PWD/my-conf:/etc/livechain:ro" livechain

# The toolchain the test suite builds with; at least the newest rust-version among the locked
# dependencies (scripts/container-check checks it).
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS build
# cmake and a C++ compiler: pingora's zlib-ng build. Versions are not pinned (DL3008): Debian
# stable replaces them with security updates, and a pin would break the build when it does.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Cargo.toml names the benches, so cargo wants their files; conf/ is compiled in (the demo).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY conf ./conf
RUN cargo build --release --locked

FROM debian:bookworm-slim
# ca-certificates: HTTPS upstreams are verified against the system roots (unpinned: see above).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so Kubernetes' runAsUser and volume ownership (fsGroup) can name it.
RUN groupadd --system --gid 10001 livechain \
    && useradd --system --uid 10001 --gid livechain --home-dir /var/lib/livechain \
        --no-create-home --shell /usr/sbin/nologin livechain \
    && install -d -o livechain -g livechain -m 0700 /var/lib/livechain
COPY --from=build /src/target/release/livechain /usr/bin/livechain
COPY deploy/container/livechain.toml /etc/livechain/livechain.toml
COPY pkg/etc/upstreams.toml /etc/livechain/upstreams.toml
USER 10001:10001
WORKDIR /var/lib/livechain
VOLUME ["/var/lib/livechain"]
# 8545: JSON-RPC over HTTP and WebSocket; 9100: /metrics and /health (server.metrics_listen).
EXPOSE 8545 9100
# livechain drains in-flight requests on SIGTERM (server.grace_period_ms) and reloads its config
# on SIGHUP; as PID 1 it gets both, because it installs handlers for them (signals without a
# handler are ignored by PID 1).
STOPSIGNAL SIGTERM
# Readiness, asked of livechain itself: no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/bin/livechain", "health", "--url", "http://127.0.0.1:8545/health/ready"]
# Exec form: livechain is PID 1 and gets the signals itself, not through a shell.
ENTRYPOINT ["/usr/bin/livechain", "--config", "/etc/livechain/livechain.toml"]
CMD ["--log-format", "json"]
