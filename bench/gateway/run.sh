#!/usr/bin/env bash
# Gateway throughput and memory, measured against a plain nginx reverse-proxy hop.
#
#   bench/gateway/run.sh            # DURATION=15 CONNECTIONS=64 THREADS=2 by default
#   SKIP_ORDERS=1 bench/gateway/run.sh   # only A and B
#
# Runs, one after the other, with the same load tool and settings
# (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, GET /v1/products/{id}):
#   A. nginx  -> minimal axum JSON handler (gateway/examples/bench_upstream.rs)
#   B. gateway -> the same minimal handler     (the gateway's own cost, like for like)
#   C. gateway -> orders                       (the issue's target: >= 0.8 x A)
#   D. orders directly
# and prints requests/s, the ratios, and the gateway's RSS idle and under load.
# Needs: wrk, nginx (apt-get install wrk nginx), Postgres and Redis on localhost.
set -euo pipefail

DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d)
DB=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/shop_bench}
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk nginx" >&2; exit 1; }
done

echo "== building (release)"
(cd "$ROOT" && cargo build --release -q -p shop-gateway --bin gateway --example bench_upstream)
HAVE_ORDERS=1
if [ "${SKIP_ORDERS:-0}" = 1 ]; then HAVE_ORDERS=0; else
  (cd "$ROOT" && cargo build --release -q -p shop-orders --bin orders) || HAVE_ORDERS=0
fi

wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; exit 1; }
rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
run_wrk() { # name url
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION"s --latency "$2" > "$WORK/$1.txt"
  if grep -q 'Non-2xx' "$WORK/$1.txt"; then echo "$1: some requests failed:" >&2; cat "$WORK/$1.txt" >&2; exit 1; fi
  echo "   $1: $(rps "$WORK/$1.txt") req/s, p99 $(awk '/ 99%/ {print $2}' "$WORK/$1.txt")"
}

# Upstream: the minimal handler.
BENCH_UPSTREAM_ADDR=127.0.0.1:9901 "$BIN/examples/bench_upstream" & PIDS+=($!)
wait_port 9901

# A. nginx -> minimal handler.
cat > "$WORK/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:9901; keepalive 64; }
  server {
    listen 127.0.0.1:9902;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -g 'daemon off;' & PIDS+=($!)
wait_port 9902
PRODUCT_PATH=/v1/products/00000000-0000-0000-0000-000000000001
echo "== A. nginx -> minimal axum handler"
run_wrk nginx "http://127.0.0.1:9902$PRODUCT_PATH"

GATEWAY_ENV=(RATE_LIMIT_DEFAULT=100000000/s RATE_LIMIT_REDIS_PREFIX="bench:$$:" MAX_IN_FLIGHT=4096 RUST_LOG=warn DATABASE_URL="$DB")

# B. gateway -> minimal handler.
env "${GATEWAY_ENV[@]}" GATEWAY_ADDR=127.0.0.1:9903 ORDERS_URL=http://127.0.0.1:9901 "$BIN/gateway" 2>"$WORK/gw-b.log" & GW=$!; PIDS+=($GW)
wait_port 9903
sleep 1
IDLE_RSS=$(rss_kib $GW)
echo "== B. gateway -> minimal axum handler (idle RSS $((IDLE_RSS / 1024)) MiB)"
run_wrk gateway_min "http://127.0.0.1:9903$PRODUCT_PATH"
LOAD_RSS_B=$(rss_kib $GW)
kill $GW; wait $GW 2>/dev/null || true

if [ "$HAVE_ORDERS" = 1 ]; then
  export DATABASE_URL=$DB
  "$BIN/orders" migrate >/dev/null
  "$BIN/orders" seed --products 100 --users 10 >/dev/null
  PRODUCT_ID=$(psql "$DB" -Atc 'select id from products order by sku limit 1')
  ORDERS_ADDR=127.0.0.1:9904 RUST_LOG=warn "$BIN/orders" serve 2>"$WORK/orders.log" & PIDS+=($!)
  wait_port 9904
  env "${GATEWAY_ENV[@]}" GATEWAY_ADDR=127.0.0.1:9905 ORDERS_URL=http://127.0.0.1:9904 "$BIN/gateway" 2>"$WORK/gw-c.log" & GW=$!; PIDS+=($GW)
  wait_port 9905
  curl -fsS "http://127.0.0.1:9905/v1/products/$PRODUCT_ID" >/dev/null
  echo "== C. gateway -> orders"
  run_wrk gateway_orders "http://127.0.0.1:9905/v1/products/$PRODUCT_ID"
  LOAD_RSS_C=$(rss_kib $GW)
  echo "== D. orders directly"
  run_wrk orders "http://127.0.0.1:9904/v1/products/$PRODUCT_ID"
fi

echo
echo "== results (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s)"
A=$(rps "$WORK/nginx.txt"); B=$(rps "$WORK/gateway_min.txt")
printf '  nginx -> axum          %10.0f req/s\n' "$A"
printf '  gateway -> axum        %10.0f req/s   %.2fx nginx\n' "$B" "$(echo "$B / $A" | bc -l)"
if [ "$HAVE_ORDERS" = 1 ]; then
  C=$(rps "$WORK/gateway_orders.txt"); D=$(rps "$WORK/orders.txt")
  printf '  gateway -> orders      %10.0f req/s   %.2fx nginx (target >= 0.80), %.2fx orders direct\n' "$C" "$(echo "$C / $A" | bc -l)" "$(echo "$C / $D" | bc -l)"
  printf '  orders direct          %10.0f req/s\n' "$D"
  printf '  gateway RSS: idle %d MiB, under load (-> orders) %d MiB\n' $((IDLE_RSS / 1024)) $((LOAD_RSS_C / 1024))
else
  echo "  (orders binary not available: C and D skipped)"
  printf '  gateway RSS: idle %d MiB, under load %d MiB\n' $((IDLE_RSS / 1024)) $((LOAD_RSS_B / 1024))
fi
