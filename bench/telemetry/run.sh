#!/usr/bin/env bash
# What tracing costs on the order placement path: orders/s with OTel disabled, with an
# exporter but sampling at 0%, and at 100% (every span exported to a local OTLP sink
# that decodes and counts them), one run, same database, same load.
#
#   bench/telemetry/run.sh                 # 16 connections, 15 s per mode
#   CONNECTIONS=32 DURATION=30 bench/telemetry/run.sh
#   SKIP_BUILD=1 bench/telemetry/run.sh    # reuse target/release
#
# Needs: wrk, a release build (it builds one), Postgres and Redis on localhost. The sink
# (crates/telemetry/examples/otlp_sink.rs) shares the machine's cores with orders, as
# Jaeger does in docker compose. Sends load to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-15}
PORT=${PORT:-18091}
SINK_ADDR=${SINK_ADDR:-127.0.0.1:14318}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
DB=shop_bench_telemetry
export DATABASE_URL="$PGURL/$DB"
TARGET=${CARGO_TARGET_DIR:-target}

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -q -p shop-orders --bin orders
  cargo build --release -q -p shop-auth --example mint-token
  cargo build --release -q -p shop-telemetry --features testing --example otlp_sink
fi
ORDERS="$TARGET/release/orders"

psql "$PGURL/postgres" -qc "drop database if exists $DB" -qc "create database $DB"
"$ORDERS" migrate
"$ORDERS" seed --products 100 --users 0 --stock 2000000000 >/dev/null

work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
psql "$DATABASE_URL" -tAc "select id from products order by sku" > "$work/products"
export PRODUCTS_FILE="$work/products"
export TOKEN=$("$TARGET/release/examples/mint-token" deploy/dev-keys/private.pem)

"$TARGET/release/examples/otlp_sink" "$SINK_ADDR" > "$work/sink.out" 2>&1 & sink=$!; pids+=($sink)
sleep 0.5

run_mode() { # name, then env assignments for orders
  local name=$1; shift
  env "$@" ORDERS_ADDR=127.0.0.1:$PORT RUST_LOG=warn DATABASE_MAX_CONNECTIONS=$CONNECTIONS \
    EVENTS_STREAM="shop:bench:telemetry" "$ORDERS" serve > "$work/orders-$name.log" 2>&1 &
  local pid=$!; pids+=($pid)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  wrk -t2 -c"$CONNECTIONS" -d3s -s bench/orders/place-order.lua "http://127.0.0.1:$PORT" >/dev/null
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s bench/orders/place-order.lua "http://127.0.0.1:$PORT" > "$work/wrk-$name.txt"
  kill -TERM $pid; wait $pid || true
  if grep -q 'Non-2xx' "$work/wrk-$name.txt"; then
    echo "  $name: some requests failed:" >&2; cat "$work/wrk-$name.txt" >&2; exit 1
  fi
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk-$name.txt")
  local p99; p99=$(awk '/Latency/ {print $2; exit}' "$work/wrk-$name.txt")
  echo "$name $rps" >> "$work/results"
  printf '  %-28s %8.0f orders/s  (mean latency %s)\n' "$name" "$rps" "$p99"
}

echo "== order placement, $CONNECTIONS connections, ${DURATION}s per mode"
run_mode disabled OTEL_SDK_DISABLED=true
run_mode sampled-0% OTEL_EXPORTER_OTLP_ENDPOINT="http://$SINK_ADDR" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
  OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0
run_mode sampled-100% OTEL_EXPORTER_OTLP_ENDPOINT="http://$SINK_ADDR" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
  OTEL_TRACES_SAMPLER=always_on
kill -TERM $sink; wait $sink || true
echo
awk '{r[$1]=$2} END {
  printf "== ratios (orders/s relative to OTel disabled)\n";
  printf "  sampled 0%%   %.2f\n", r["sampled-0%"] / r["disabled"];
  printf "  sampled 100%% %.2f\n", r["sampled-100%"] / r["disabled"];
}' "$work/results"
tail -1 "$work/sink.out"
