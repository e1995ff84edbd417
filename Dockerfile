# syntax=docker/dockerfile:1.7
#
# One image recipe for every binary of the workspace, built once: the builder compiles
# all of them in one `cargo build`, then one final stage per binary, named after it,
# copies its binary onto the shared runtime base. Pick the image with the stage:
#
#   docker build --target orders   -t shop/orders .
#   docker build --target gateway  -t shop/gateway .
#   docker build --target payments -t shop/payments .
#   docker build --target loadtest -t shop/loadtest .
#
# docker-compose.yml selects the stage with `build.target` (deploy/k8s runs the images
# built this way). Nothing that differs per binary sits above `cargo chef cook`, so the
# dependency layer has one cache key for all of them and `docker compose up --build`
# compiles the dependencies once, not once per service.
#
# Stages:
#   chef      rust toolchain + cargo-chef (pinned)
#   planner   computes the dependency "recipe" from the manifests only
#   builder   builds the dependencies (cached layer: it changes only when Cargo.toml /
#             Cargo.lock change), then every shipped binary, in release mode
#   runtime   distroless cc (glibc + libgcc + CA certificates, no shell, no package
#             manager, no compiler, no sources), non-root (uid 65532); shared by:
#   gateway, loadtest, payments, orders
#             runtime + /usr/local/bin/<binary>, its entrypoint, healthcheck and port.
#             `orders` is last, so a plain `docker build .` still builds it.
#
# Adding a binary (say `refunds`) is a few lines: `--bin refunds` in the builder's
# `cargo build`, then a stage above `orders` like the others (payments is the model:
# FROM runtime, LABEL, COPY of the binary, EXPOSE its port, HEALTHCHECK running its
# `healthcheck` subcommand, ENTRYPOINT), and `build: {context: ., target: refunds}` in
# docker-compose.yml. scripts/validate-deploy checks each of these steps.
#
# No curl in the images: HEALTHCHECK runs the binary's own `healthcheck` subcommand
# (GET its /healthz on 127.0.0.1; exit 0 or 1). The binary is on PATH and is the
# entrypoint, so `docker compose run orders seed ...` and
# `docker compose exec orders orders --help` both work.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.73
RUN cargo install --locked cargo-chef --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
# Every binary an image ships, in one build: the workspace compiles once for all stages.
RUN cargo build --release --locked --bin orders --bin gateway --bin payments --bin loadtest

FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.source="https://github.com/shop-rs/shop" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
# Containers log JSON to stdout; everything else has a working default in the binary.
# mimalloc (the services' allocator) returns freed memory to the OS at once instead of
# after a delay: a login's 19 MiB argon2id buffer is not kept resident (docs/gateway.md).
ENV LOG_FORMAT=json \
    MIMALLOC_PURGE_DELAY=0
USER 65532:65532

FROM runtime AS gateway
LABEL org.opencontainers.image.title="shop-gateway"
COPY --from=builder /src/target/release/gateway /usr/local/bin/gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/gateway", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gateway"]

# The load generator: a batch job that listens on nothing, so no port and no healthcheck.
FROM runtime AS loadtest
LABEL org.opencontainers.image.title="shop-loadtest"
COPY --from=builder /src/target/release/loadtest /usr/local/bin/loadtest
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/loadtest"]

# payments: the order events' consumer (group `payments`) and the simulated provider.
# Its port serves probes, /metrics and the internal /admin/provider only.
FROM runtime AS payments
LABEL org.opencontainers.image.title="shop-payments"
COPY --from=builder /src/target/release/payments /usr/local/bin/payments
EXPOSE 8082
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/payments", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/payments"]

FROM runtime AS orders
LABEL org.opencontainers.image.title="shop-orders"
COPY --from=builder /src/target/release/orders /usr/local/bin/orders
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/orders", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/orders"]
