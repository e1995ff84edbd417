# syntax=docker/dockerfile:1.7
#
# One image recipe for every binary of the workspace: `--build-arg BIN=orders`,
# `BIN=gateway` or `BIN=loadtest`. docker-compose.yml and deploy/k8s build it per service.
#
# Stages:
#   chef     rust toolchain + cargo-chef (pinned)
#   planner  computes the dependency "recipe" from the manifests only
#   builder  builds the dependencies (cached layer: it changes only when Cargo.toml /
#            Cargo.lock change), then the workspace, in release mode
#   runtime  distroless cc (glibc + libgcc + CA certificates, no shell, no package
#            manager, no compiler, no sources), non-root (uid 65532)
#
# The binary is installed as /usr/local/bin/<BIN> and the entrypoint is a symlink to it,
# so `docker compose run orders seed ...` and `docker compose exec orders orders --help`
# both work. No curl in the image: HEALTHCHECK runs the binary's own `healthcheck`
# subcommand (GET its /healthz on 127.0.0.1; exit 0 or 1).

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
ARG BIN=orders
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin "${BIN}" \
 && install -D -m 0755 "target/release/${BIN}" "/out/bin/${BIN}" \
 && ln -s "${BIN}" /out/bin/service

FROM ${RUNTIME_IMAGE} AS runtime
ARG BIN=orders
LABEL org.opencontainers.image.source="https://github.com/shop-rs/shop" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.title="shop-${BIN}"
COPY --from=builder /out/bin/ /usr/local/bin/
# Containers log JSON to stdout; everything else has a working default in the binary.
# mimalloc (the services' allocator) returns freed memory to the OS at once instead of
# after a delay: a login's 19 MiB argon2id buffer is not kept resident (docs/gateway.md).
ENV LOG_FORMAT=json \
    MIMALLOC_PURGE_DELAY=0
USER 65532:65532
# 8080 gateway, 8081 orders (the load generator listens on nothing).
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/service", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/service"]
