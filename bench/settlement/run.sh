#!/usr/bin/env bash
# Settlement keeps up with placement: the whole stack (gateway, orders, payments with
# the provider at 0 ms, release builds) under the load generator, then its correctness
# check, which waits for settlement and prints orders placed/s vs settled/s and the
# settlement latency (placed -> paid | cancelled) percentiles; plus payments' RSS idle
# and at its peak under that load.
#
#   bench/settlement/run.sh                   # 16 users, 30 s
#   USERS=32 DURATION=60s bench/settlement/run.sh
#
# Needs: Postgres and Redis on localhost (a database and streams of its own), a release
# build (it builds one; SKIP_BUILD=1 uses what is built). Sends load to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."
USERS=${USERS:-16}
DURATION=${DURATION:-30s}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
DB=shop_settle
export DATABASE_URL="$PGURL/$DB"
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release
RUN=$$
export EVENTS_STREAM="shop:bench:$RUN:orders" PAYMENT_EVENTS_STREAM="shop:bench:$RUN:payments"

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -q --bin orders --bin payments --bin gateway --bin loadtest
fi

psql "$PGURL/postgres" -qc "drop database if exists $DB" -qc "create database $DB"
"$BIN/orders" migrate
"$BIN/orders" seed --products 100 --users 16 --stock 1000000 >/dev/null

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; exit 1; }
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

ORDERS_ADDR=127.0.0.1:18181 RUST_LOG=warn "$BIN/orders" serve 2>"$work/orders.log" & pids+=($!)
PAYMENTS_ADDR=127.0.0.1:18182 PAYMENTS_LATENCY=0ms ORDER_EVENTS_STREAM="$EVENTS_STREAM" \
  EVENTS_STREAM="$PAYMENT_EVENTS_STREAM" RUST_LOG=warn "$BIN/payments" serve 2>"$work/payments.log" & payments=$!; pids+=($payments)
GATEWAY_ADDR=127.0.0.1:18180 ORDERS_URL=http://127.0.0.1:18181 RUST_LOG=warn ACCESS_LOG=false \
  RATE_LIMIT_LOGIN=1000/s RATE_LIMIT_ORDERS=100000/s RATE_LIMIT_DEFAULT=100000/s \
  "$BIN/gateway" serve 2>"$work/gateway.log" & pids+=($!)
wait_port 18181; wait_port 18182; wait_port 18180
sleep 2
idle=$(rss "$payments")
( peak=0; while kill -0 "$payments" 2>/dev/null; do r=$(rss "$payments"); peak=$(echo "$r $peak" | awk '{print ($1>$2)?$1:$2}'); echo "$peak" > "$work/peak"; sleep 0.5; done ) &
sampler=$!

LOADTEST_TARGET=http://127.0.0.1:18180 LOADTEST_USERS=$USERS LOADTEST_DURATION=$DURATION \
  LOADTEST_REPORT= RUST_LOG=warn "$BIN/loadtest" | tee "$work/loadtest.txt"
kill $sampler 2>/dev/null || true
echo
echo "== payments RSS: idle $idle MiB, peak under load $(cat "$work/peak") MiB (budget 30 / 100)"
