#!/usr/bin/env bash
# Orders placed per second through gateway -> orders vs pgbench running the minimal
# equivalent transaction (bench/orders/minimal-order.sql, prepared), on the same
# Postgres, same concurrency, back to back in one run: issue #16's first figure
# (goal: >= 0.8).
#
#   bench/placement/run.sh                  # 16 connections, 15 s each, one pair
#   REPEAT=3 bench/placement/run.sh         # three pairs, to show the noise
#   CONNECTIONS=32 DURATION=30 SKIP_BUILD=1 bench/placement/run.sh
#   PERF=1 bench/placement/run.sh           # + perf profiles of orders and Postgres (below)
#   BIN=/tmp/before SKIP_BUILD=1 bench/placement/run.sh   # binaries built elsewhere
#
# Each pair: wrk (bench/orders/place-order.lua: POST /v1/orders of one unit of one of
# 100 products, a fresh Idempotency-Key per request, one user's token) against the
# gateway for DURATION seconds, then at once pgbench with the minimal transaction for
# DURATION seconds, in the same database. A pair is measured within the same minute,
# so both sides see the same neighbours on a shared machine; the ratio is taken per
# pair. It also prints the CPU time the gateway and orders spent per order, and the
# CPU time of this database's Postgres backends per order (orders' pool) and per
# minimal transaction (pgbench's connections, over the middle of its run).
#
# The gateway runs as deployed: its access log on if it has one (ACCESS_LOG, written to
# a file here), rate limits raised (the production 60 orders a minute per user would
# answer 429), orders' pool at CONNECTIONS (as pgbench's clients), `RUST_LOG=info` for
# orders so that its `order placed` line is written (to a file) as in production.
#
# PERF=1 also records, during the first pair's wrk run, `perf record -g` of orders
# (dwarf call graphs need the release build's line tables) and of the Postgres backends
# serving this database (frame-pointer call graphs: Debian's Postgres has no frame
# pointers, so its stacks are shallow but its functions are right), and writes flame graphs (inferno: `cargo install inferno`) to
# $PROFILE_DIR (default docs/profiles), named $PROFILE_TAG-orders.svg and
# $PROFILE_TAG-postgres.svg (PROFILE_TAG default `placement`).
#
# Needs: wrk, pgbench, psql, curl, Postgres and Redis on localhost; builds the release
# binaries unless SKIP_BUILD=1. Sends load to 127.0.0.1 only. Leaves nothing behind but
# its database (shop_bench_placement, re-created each run).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-15}
REPEAT=${REPEAT:-1}
ORDERS_PORT=${ORDERS_PORT:-18181}
GATEWAY_PORT=${GATEWAY_PORT:-18180}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
DB=shop_bench_placement
export DATABASE_URL="$PGURL/$DB"
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TARGET/release}
PROFILE_DIR=${PROFILE_DIR:-docs/profiles}
PROFILE_TAG=${PROFILE_TAG:-placement}
STREAM="shop:bench:placement:$$"

for tool in wrk pgbench psql curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y wrk postgresql-client curl)" >&2; exit 1; }
done
if [ "${PERF:-0}" = 1 ]; then
  for tool in perf inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null || { echo "PERF=1 needs $tool (apt-get install -y linux-perf; cargo install inferno)" >&2; exit 1; }
  done
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p shop-orders --bin orders -p shop-gateway --bin gateway \
    -p shop-auth --example mint-token
fi

work=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli -h 127.0.0.1 del "$STREAM" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

psql -X -q "$PGURL/postgres" -c "set client_min_messages = warning" \
  -c "drop database if exists $DB" -c "create database $DB"
"$BIN/orders" migrate
"$BIN/orders" seed --products 100 --users 0 --stock 2000000000 >/dev/null
psql -X -q "$DATABASE_URL" -c "vacuum analyze"
psql -X -tAc "select id from products order by sku" "$DATABASE_URL" > "$work/products"
export PRODUCTS_FILE="$work/products"
TOKEN=$("$BIN/examples/mint-token" deploy/dev-keys/private.pem)
export TOKEN

wait_http() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "$1 not up" >&2; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks of the processes in the comma-separated list that still run.
ticks_of() {
  local t=0 p
  for p in ${1//,/ }; do
    if [ -r "/proc/$p/stat" ]; then t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); fi
  done
  echo "$t"
}
# The pids of this database's backends ($1: an application_name, or all but psql's).
backends() {
  psql -X -tAc "select string_agg(pid::text, ',') from pg_stat_activity
                where datname = '$DB' and pid <> pg_backend_pid() ${1:+and application_name = '$1'}" "$DATABASE_URL"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

ORDERS_ADDR=127.0.0.1:$ORDERS_PORT RUST_LOG=info DATABASE_MAX_CONNECTIONS=$CONNECTIONS \
  EVENTS_STREAM="$STREAM" PAYMENT_EVENTS_STREAM="$STREAM:payments" \
  "$BIN/orders" serve > "$work/orders.log" 2>&1 &
ORDERS=$!; PIDS+=("$ORDERS")
wait_http "http://127.0.0.1:$ORDERS_PORT/healthz"

ACCESS_LOG_NOTE="the gateway of this build has no access log"
if grep -rqs ACCESS_LOG gateway/src; then ACCESS_LOG_NOTE="gateway access log on (to a file)"; fi
GATEWAY_ADDR=127.0.0.1:$GATEWAY_PORT ORDERS_URL=http://127.0.0.1:$ORDERS_PORT \
  RATE_LIMIT_ORDERS=100000000/s RATE_LIMIT_DEFAULT=100000000/s \
  RATE_LIMIT_REDIS_PREFIX="bench:placement:$$:" MAX_IN_FLIGHT=4096 ACCESS_LOG=true \
  RUST_LOG=info "$BIN/gateway" > "$work/gateway.log" 2>&1 &
GATEWAY=$!; PIDS+=("$GATEWAY")
wait_http "http://127.0.0.1:$GATEWAY_PORT/healthz"

echo "== warm-up: wrk -c$CONNECTIONS 3 s through the gateway"
wrk -t2 -c"$CONNECTIONS" -d3s -s bench/orders/place-order.lua "http://127.0.0.1:$GATEWAY_PORT" >/dev/null

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
results=()
for run in $(seq 1 "$REPEAT"); do
  echo "== pair $run/$REPEAT: wrk -c$CONNECTIONS ${DURATION}s gateway -> orders, then pgbench minimal"
  perf_pids=()
  if [ "${PERF:-0}" = 1 ] && [ "$run" = 1 ]; then
    perf record -F 499 -g --call-graph dwarf,16384 -p "$ORDERS" -o "$work/orders.perf" \
      -- sleep "$DURATION" > /dev/null 2>&1 & perf_pids+=($!)
    # The backends of this database only (the server is shared with other work).
    perf record -F 499 -g -p "$(backends)" -o "$work/postgres.perf" \
      -- sleep "$DURATION" > /dev/null 2>&1 & perf_pids+=($!)
  fi
  pool=$(backends)
  o0=$(cpu_ticks "$ORDERS"); g0=$(cpu_ticks "$GATEWAY"); p0=$(ticks_of "$pool")
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s bench/orders/place-order.lua \
    "http://127.0.0.1:$GATEWAY_PORT" > "$work/wrk.txt"
  o1=$(cpu_ticks "$ORDERS"); g1=$(cpu_ticks "$GATEWAY"); p1=$(ticks_of "$pool")
  for pid in "${perf_pids[@]}"; do wait "$pid" || true; done
  if grep -q 'Non-2xx' "$work/wrk.txt" || ! grep -q '^non_2xx_or_errors 0' "$work/wrk.txt"; then
    echo "some orders failed:" >&2; cat "$work/wrk.txt" >&2; tail -20 "$work/orders.log" >&2; exit 1
  fi
  stack=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
  requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
  pgbench -n -M prepared -c "$CONNECTIONS" -j 2 -T "$DURATION" -f bench/orders/minimal-order.sql \
    "$DATABASE_URL" > "$work/pgbench.txt" &
  bench=$!
  # pgbench's backends' CPU over the middle of its run (they end with it).
  sleep 2; clients=$(backends pgbench); q0=$(ticks_of "$clients")
  sleep $((DURATION - 3)); q1=$(ticks_of "$clients")
  wait "$bench"
  minimal=$(awk '/^tps/ {print $3; exit}' "$work/pgbench.txt")
  pg_stack=$(( (p1 - p0) * TICK_US / requests ))
  pg_minimal=$(awk -v t=$(( (q1 - q0) * TICK_US )) -v tps="$minimal" -v s=$((DURATION - 3)) 'BEGIN {printf "%d", t / (tps * s)}')
  line=$(printf '%-4s %9.0f orders/s  %9.0f tx/s   %5s   %5d µs   %5d µs   %5d µs  %5d µs   %s' "$run" "$stack" "$minimal" \
    "$(ratio "$stack" "$minimal")" $(( (o1 - o0) * TICK_US / requests )) $(( (g1 - g0) * TICK_US / requests )) \
    "$pg_stack" "$pg_minimal" "$(awk '/p50_ms/ {print $2 "/" $4}' "$work/wrk.txt")")
  echo "$line"
  results+=("$line")
done

if [ "${PERF:-0}" = 1 ]; then
  mkdir -p "$PROFILE_DIR"
  perf script -i "$work/orders.perf" 2>/dev/null | inferno-collapse-perf > "$work/orders.folded"
  inferno-flamegraph --title "orders, placement through the gateway ($PROFILE_TAG)" --minwidth 0.5 \
    < "$work/orders.folded" > "$PROFILE_DIR/$PROFILE_TAG-orders.svg"
  perf script -i "$work/postgres.perf" 2>/dev/null | inferno-collapse-perf > "$work/postgres.folded"
  inferno-flamegraph --title "Postgres, placement through the gateway ($PROFILE_TAG)" --minwidth 0.5 \
    < "$work/postgres.folded" > "$PROFILE_DIR/$PROFILE_TAG-postgres.svg"
  cp "$work/orders.folded" "$work/postgres.folded" "${FOLDED_DIR:-/tmp}/" 2>/dev/null || true
  echo "flame graphs: $PROFILE_DIR/$PROFILE_TAG-orders.svg, $PROFILE_DIR/$PROFILE_TAG-postgres.svg"
fi

negative=$(psql -X -tAc "select count(*) from products where stock < 0" "$DATABASE_URL")
echo
echo "== placement through gateway -> orders vs pgbench minimal transaction"
echo "   ($CONNECTIONS connections, ${DURATION}s each side, each pair back to back; $ACCESS_LOG_NOTE)"
echo "pair    stack              minimal        ratio   orders CPU gateway CPU Postgres CPU per   p50/p99 ms"
echo "                                                  per order  per order  order     minimal tx  (stack)"
printf '%s\n' "${results[@]}"
printf 'negative stock: %s products (goal: ratio >= 0.8)\n' "$negative"
