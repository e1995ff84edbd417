#!/usr/bin/env bash
# Product cache throughput: GET /v1/products/{id} on its three paths, same run.
#
#   bench/cache/run.sh          # DURATION=15 CONNECTIONS=64 THREADS=2 PRODUCTS=100 by default
#
# Starts target/release/orders three times on 127.0.0.1 (one after the other), each
# against the same seeded database and the local Redis, and drives it with
# wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s over $PRODUCTS product ids:
#   L1        the default cache: every request after the first per id is an L1 hit
#   L2        CACHE_L1_CAPACITY=0: every request reads Redis (L2 is warmed first)
#   Postgres  CACHE_ENABLED=false: every request queries Postgres
# and prints requests/s, p99 and the ratios to the Postgres path.
# Needs: wrk (apt-get install -y wrk), Postgres and Redis on localhost.
set -euo pipefail

DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PRODUCTS=${PRODUCTS:-100}
PORT=${PORT:-9811}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release/orders
WORK=$(mktemp -d)
export DATABASE_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/shop_bench_cache}
export REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
# Keys of this run only, so an earlier run's L2 cannot help.
export CACHE_REDIS_PREFIX="shop:bench:$$:cache"
export CACHE_INVALIDATION_CHANNEL="shop:bench:$$:invalidations"
export ORDERS_ADDR=127.0.0.1:$PORT
export RUST_LOG=${RUST_LOG:-warn}
# The bench measures the cache, not the edge protections.
export MAX_IN_FLIGHT=100000
PID=

cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "missing wrk: apt-get install -y wrk" >&2; exit 1; }

echo "== building (release)"
(cd "$ROOT" && cargo build --release -q -p shop-orders --bin orders)

echo "== database $DATABASE_URL: migrate, seed $PRODUCTS products"
"$BIN" migrate >/dev/null
"$BIN" seed --products "$PRODUCTS" --users 1 >/dev/null
psql -qAt "$DATABASE_URL" -c "select id from products order by id limit $PRODUCTS" > "$WORK/ids.txt"

cat > "$WORK/ids.lua" <<LUA
local ids = {}
for line in io.lines("$WORK/ids.txt") do ids[#ids + 1] = line end
local i = 0
request = function()
  i = i % #ids + 1
  return wrk.format("GET", "/v1/products/" .. ids[i])
end
LUA

wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && return 0; sleep 0.1; done; echo "port $PORT not up" >&2; exit 1; }
rps() { awk '/Requests\/sec/ {print $2}' "$WORK/$1.txt"; }
warm() { while read -r id; do curl -fsS -o /dev/null "http://$ORDERS_ADDR/v1/products/$id"; done < "$WORK/ids.txt"; }

run() { # name, then env assignments for orders
  local name=$1; shift
  env "$@" "$BIN" serve & PID=$!
  wait_port
  warm
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION"s --latency -s "$WORK/ids.lua" "http://$ORDERS_ADDR" > "$WORK/$name.txt"
  local errors
  errors=$(awk '/Non-2xx/ {print $5}' "$WORK/$name.txt")
  echo "   $name: $(rps "$name") req/s, p99 $(awk '/ 99%/ {print $2}' "$WORK/$name.txt")${errors:+, NON-2XX: $errors}"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}

echo "== wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s over $PRODUCTS ids"
run postgres CACHE_ENABLED=false
run l2 CACHE_L1_CAPACITY=0
run l1

awk -v pg="$(rps postgres)" -v l2="$(rps l2)" -v l1="$(rps l1)" 'BEGIN {
  printf "== ratios to the Postgres path: L2 %.2fx, L1 %.2fx (L1/L2 %.2fx)\n", l2 / pg, l1 / pg, l1 / l2
}'
