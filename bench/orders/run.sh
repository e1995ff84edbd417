#!/usr/bin/env bash
# Order placement straight to orders vs pgbench's minimal equivalent transaction, on the
# same Postgres, same concurrency, one run; plus orders' RSS idle and under load.
#
#   bench/orders/run.sh            # 16 connections, 15 s each
#   CONNECTIONS=32 DURATION=30 bench/orders/run.sh
#
# Needs: wrk, pgbench, a release build (it builds one), Postgres and Redis on localhost.
# Sends load to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-15}
PORT=${PORT:-18081}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
DB=shop_bench
export DATABASE_URL="$PGURL/$DB"
TARGET=${CARGO_TARGET_DIR:-target}

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -q -p shop-orders --bin orders
  cargo build --release -q -p shop-auth --example mint-token
fi
ORDERS="$TARGET/release/orders"

psql "$PGURL/postgres" -qc "drop database if exists $DB" -qc "create database $DB"
"$ORDERS" migrate
"$ORDERS" seed --products 100 --users 0 --stock 2000000000 >/dev/null

work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
psql "$DATABASE_URL" -tAc "select id from products order by sku" > "$work/products"
export PRODUCTS_FILE="$work/products"
export TOKEN=$("$TARGET/release/examples/mint-token" deploy/dev-keys/private.pem)

ORDERS_ADDR=127.0.0.1:$PORT RUST_LOG=warn DATABASE_MAX_CONNECTIONS=$CONNECTIONS \
  EVENTS_STREAM="shop:bench:events" "$ORDERS" serve > "$work/orders.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
sleep 2
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status"; }
idle_rss=$(rss)

# Warm up, then measure; sample RSS while loaded.
wrk -t2 -c"$CONNECTIONS" -d3s -s bench/orders/place-order.lua "http://127.0.0.1:$PORT" >/dev/null
( peak=0; while kill -0 $pid 2>/dev/null; do r=$(rss); peak=$(echo "$r $peak" | awk '{print ($1>$2)?$1:$2}'); echo "$peak" > "$work/peak"; sleep 0.5; done ) &
sampler=$!
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s bench/orders/place-order.lua "http://127.0.0.1:$PORT" | tee "$work/wrk.txt"
kill $sampler 2>/dev/null || true
loaded_rss=$(cat "$work/peak")
if grep -q 'Non-2xx' "$work/wrk.txt"; then echo "some orders failed (see above)" >&2; exit 1; fi
orders_rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
kill -TERM $pid; wait $pid || true

pgbench -n -c "$CONNECTIONS" -j 2 -T "$DURATION" -f bench/orders/minimal-order.sql "$DATABASE_URL" | tee "$work/pgbench.txt"
pg_tps=$(awk '/^tps/ {print $3; exit}' "$work/pgbench.txt")

negative=$(psql "$DATABASE_URL" -tAc "select count(*) from products where stock < 0")
echo
echo "== orders vs pgbench, $CONNECTIONS connections, ${DURATION}s each"
printf 'orders direct      %10.0f orders/s\n' "$orders_rps"
printf 'pgbench minimal tx %10.0f tx/s\n' "$pg_tps"
printf 'ratio              %10.2f\n' "$(echo "$orders_rps $pg_tps" | awk '{print $1/$2}')"
printf 'orders RSS idle    %10s MiB\n' "$idle_rss"
printf 'orders RSS loaded  %10s MiB (peak)\n' "$loaded_rss"
printf 'negative stock     %10s products\n' "$negative"
