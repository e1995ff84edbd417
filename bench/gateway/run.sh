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
#   E. bare axum proxy -> the minimal handler   (the stack's floor: gateway/examples/bench_bare_proxy.rs,
#   F. bare axum proxy -> orders                  the gateway's hyper client and nothing else)
#   G. nginx as an API gateway -> orders         (the fair peer, issue 16: per-IP limit_req, a
#                                                  request id, a JSON access log, timeouts, a
#                                                  keep-alive upstream pool; C vs G is the figure)
# C and G both write a JSON access log line per request to a file (the gateway's is on by
# default: ACCESS_LOG), as an operator would run them.
# and prints requests/s, the ratios, the CPU time each process spent per request, and
# the gateway's RSS idle and under load. SKIP_BUILD=1 uses the release binaries as built.
# Needs: wrk, nginx (apt-get install wrk nginx), Postgres and Redis on localhost.
# PERF=1 also profiles the gateway during C and nginx's workers during G
# (bench/profile.sh; flame graphs written to $PROFILE_DIR, default docs/profiles).
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
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -q -p shop-gateway --bin gateway --example bench_upstream --example bench_bare_proxy)
fi
HAVE_ORDERS=1
if [ "${SKIP_ORDERS:-0}" = 1 ]; then HAVE_ORDERS=0; else
  [ "${SKIP_BUILD:-0}" = 1 ] || (cd "$ROOT" && cargo build --release -q -p shop-orders --bin orders) || HAVE_ORDERS=0
fi

wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; exit 1; }
rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
# CPU time (user + system, clock ticks) of a process and its threads, or of all the
# processes named $1 when it is not a pid (nginx has a master and workers).
cpu_ticks() {
  if [[ $1 =~ ^[0-9]+$ ]]; then awk '{print $14 + $15}' /proc/"$1"/stat
  else local t=0; for p in $(pgrep -x "$1"); do t=$((t + $(awk '{print $14 + $15}' /proc/"$p"/stat))); done; echo $t; fi
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
run_wrk() { # name url proxy-pid-or-name [upstream-pid]
  local before_p before_u after_p after_u
  before_p=$(cpu_ticks "$3"); before_u=${4:+$(cpu_ticks "$4")}
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION"s --latency "$2" > "$WORK/$1.txt"
  after_p=$(cpu_ticks "$3"); after_u=${4:+$(cpu_ticks "$4")}
  if grep -q 'Non-2xx' "$WORK/$1.txt"; then echo "$1: some requests failed:" >&2; cat "$WORK/$1.txt" >&2; exit 1; fi
  local requests; requests=$(awk '/requests in/ {print $1}' "$WORK/$1.txt")
  local line="   $1: $(rps "$WORK/$1.txt") req/s, p99 $(awk '/ 99%/ {print $2}' "$WORK/$1.txt"); CPU per request: $(( (after_p - before_p) * TICK_US / requests )) µs in $3"
  if [ -n "${4:-}" ]; then line+=", $(( (after_u - before_u) * TICK_US / requests )) µs upstream"; fi
  echo "$line"
}

# Upstream: the minimal handler.
BENCH_UPSTREAM_ADDR=127.0.0.1:9901 "$BIN/examples/bench_upstream" & UPSTREAM=$!; PIDS+=($UPSTREAM)
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
run_wrk nginx "http://127.0.0.1:9902$PRODUCT_PATH" nginx "$UPSTREAM"

GATEWAY_ENV=(RATE_LIMIT_DEFAULT=100000000/s RATE_LIMIT_REDIS_PREFIX="bench:$$:" MAX_IN_FLIGHT=4096 RUST_LOG=warn,access=info LOG_FORMAT=json DATABASE_URL="$DB")

# B. gateway -> minimal handler.
env "${GATEWAY_ENV[@]}" GATEWAY_ADDR=127.0.0.1:9903 ORDERS_URL=http://127.0.0.1:9901 "$BIN/gateway" 2>"$WORK/gw-b.log" & GW=$!; PIDS+=($GW)
wait_port 9903
sleep 1
IDLE_RSS=$(rss_kib $GW)
echo "== B. gateway -> minimal axum handler (idle RSS $((IDLE_RSS / 1024)) MiB)"
run_wrk gateway_min "http://127.0.0.1:9903$PRODUCT_PATH" "$GW" "$UPSTREAM"
LOAD_RSS_B=$(rss_kib $GW)
kill $GW; wait $GW 2>/dev/null || true

if [ "$HAVE_ORDERS" = 1 ]; then
  export DATABASE_URL=$DB
  "$BIN/orders" migrate >/dev/null
  "$BIN/orders" seed --products 100 --users 10 >/dev/null
  PRODUCT_ID=$(psql "$DB" -Atc 'select id from products order by sku limit 1')
  ORDERS_ADDR=127.0.0.1:9904 RUST_LOG=warn "$BIN/orders" serve 2>"$WORK/orders.log" & ORDERS=$!; PIDS+=($ORDERS)
  wait_port 9904
  env "${GATEWAY_ENV[@]}" GATEWAY_ADDR=127.0.0.1:9905 ORDERS_URL=http://127.0.0.1:9904 "$BIN/gateway" 2>"$WORK/gw-c.log" & GW=$!; PIDS+=($GW)
  wait_port 9905
  curl -fsS "http://127.0.0.1:9905/v1/products/$PRODUCT_ID" >/dev/null
  echo "== C. gateway -> orders"
  PROFILE_DIR=${PROFILE_DIR:-$ROOT/docs/profiles}
  if [ "${PERF:-0}" = 1 ]; then
    mkdir -p "$PROFILE_DIR"
    "$ROOT/bench/profile.sh" "$GW" $((DURATION - 2)) "gateway -> orders, GET /v1/products/{id}" \
      "$PROFILE_DIR/gateway-product-read.svg" dwarf & PERF_PID=$!
  fi
  run_wrk gateway_orders "http://127.0.0.1:9905/v1/products/$PRODUCT_ID" "$GW" "$ORDERS" | tee "$WORK/gateway_orders.cpu"
  LOAD_RSS_C=$(rss_kib $GW)
  echo "== D. orders directly"
  run_wrk orders "http://127.0.0.1:9904/v1/products/$PRODUCT_ID" "$ORDERS"

  # G. nginx doing the gateway's job at the edge, in front of the same orders process.
  # Its own master/workers: named by pid file so cpu_ticks counts only this nginx.
  cat > "$WORK/nginx-api.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx-api.pid;
error_log $WORK/nginx-api-error.log warn;
events { worker_connections 4096; }
http {
  log_format shop_json escape=json '{"time":"\$time_iso8601","method":"\$request_method","uri":"\$uri","status":\$status,"duration_s":\$request_time,"bytes":\$body_bytes_sent,"request_id":"\$request_id","upstream_s":"\$upstream_response_time"}';
  access_log $WORK/nginx-api-access.log shop_json;
  limit_req_zone \$binary_remote_addr zone=per_ip:10m rate=100000000r/s;
  limit_req_status 429;
  client_header_timeout 5s;
  client_body_timeout 10s;
  client_max_body_size 256k;
  upstream orders { server 127.0.0.1:9904; keepalive 64; }
  server {
    listen 127.0.0.1:9908;
    location / {
      limit_req zone=per_ip burst=1000 nodelay;
      proxy_pass http://orders;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Request-Id \$request_id;
      add_header X-Request-Id \$request_id always;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_connect_timeout 1s;
      proxy_send_timeout 5s;
      proxy_read_timeout 5s;
    }
  }
}
NGINX
  nginx -c "$WORK/nginx-api.conf" -g 'daemon off;' & NGINX_API=$!; PIDS+=($NGINX_API)
  wait_port 9908
  curl -fsS "http://127.0.0.1:9908/v1/products/$PRODUCT_ID" >/dev/null
  echo "== G. nginx as an API gateway -> orders"
  # The master does no request work: count its workers (children of the master).
  NGINX_API_WORKERS=$(pgrep -P "$NGINX_API" | tr '\n' ' ')
  before_w=0; for p in $NGINX_API_WORKERS; do before_w=$((before_w + $(cpu_ticks "$p"))); done
  if [ "${PERF:-0}" = 1 ]; then
    wait "${PERF_PID:-}" 2>/dev/null || true
    "$ROOT/bench/profile.sh" "$(echo "$NGINX_API_WORKERS" | awk '{print $1}')" $((DURATION - 2)) \
      "nginx as an API gateway (one worker) -> orders" "$PROFILE_DIR/nginx-api-product-read.svg" & PERF_PID=$!
  fi
  run_wrk nginx_api_orders "http://127.0.0.1:9908/v1/products/$PRODUCT_ID" "$NGINX_API" "$ORDERS"
  [ "${PERF:-0}" = 1 ] && { wait "$PERF_PID" 2>/dev/null || true; }
  after_w=0; for p in $NGINX_API_WORKERS; do after_w=$((after_w + $(cpu_ticks "$p"))); done
  G_REQUESTS=$(awk '/requests in/ {print $1}' "$WORK/nginx_api_orders.txt")
  G_CPU_US=$(( (after_w - before_w) * TICK_US / G_REQUESTS ))
  echo "   nginx workers: $G_CPU_US µs CPU per request"
fi

# E/F. The floor: a bare axum server forwarding with the same hyper client, nothing else.
BENCH_PROXY_ADDR=127.0.0.1:9906 BENCH_PROXY_UPSTREAM=http://127.0.0.1:9901 "$BIN/examples/bench_bare_proxy" & BARE=$!; PIDS+=($BARE)
wait_port 9906
echo "== E. bare axum proxy -> minimal axum handler"
run_wrk bare_min "http://127.0.0.1:9906$PRODUCT_PATH" "$BARE" "$UPSTREAM"
kill $BARE; wait $BARE 2>/dev/null || true
if [ "$HAVE_ORDERS" = 1 ]; then
  BENCH_PROXY_ADDR=127.0.0.1:9907 BENCH_PROXY_UPSTREAM=http://127.0.0.1:9904 "$BIN/examples/bench_bare_proxy" & BARE=$!; PIDS+=($BARE)
  wait_port 9907
  echo "== F. bare axum proxy -> orders"
  run_wrk bare_orders "http://127.0.0.1:9907/v1/products/$PRODUCT_ID" "$BARE" "$ORDERS"
fi

echo
echo "== results (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s)"
A=$(rps "$WORK/nginx.txt"); B=$(rps "$WORK/gateway_min.txt")
printf '  nginx -> axum          %10.0f req/s\n' "$A"
printf '  gateway -> axum        %10.0f req/s   %.2fx nginx\n' "$B" "$(echo "$B / $A" | bc -l)"
E=$(rps "$WORK/bare_min.txt")
printf '  bare proxy -> axum     %10.0f req/s   %.2fx nginx\n' "$E" "$(echo "$E / $A" | bc -l)"
if [ "$HAVE_ORDERS" = 1 ]; then
  C=$(rps "$WORK/gateway_orders.txt"); D=$(rps "$WORK/orders.txt")
  printf '  gateway -> orders      %10.0f req/s   %.2fx nginx (target >= 0.80), %.2fx orders direct\n' "$C" "$(echo "$C / $A" | bc -l)" "$(echo "$C / $D" | bc -l)"
  printf '  orders direct          %10.0f req/s\n' "$D"
  G=$(rps "$WORK/nginx_api_orders.txt")
  C_CPU_US=$(grep -o 'CPU per request: [0-9]* µs' "$WORK/gateway_orders.cpu" | awk '{print $4}')
  printf '  nginx API gateway -> orders %5.0f req/s\n' "$G"
  printf '  ** gateway vs nginx doing the same job: %.2fx req/s (goal >= 0.80); CPU per request %s µs vs %s µs = %.2fx (goal <= 1.5)\n' \
    "$(echo "$C / $G" | bc -l)" "$C_CPU_US" "$G_CPU_US" "$(echo "$C_CPU_US / $G_CPU_US" | bc -l)"
  F=$(rps "$WORK/bare_orders.txt")
  printf '  bare proxy -> orders   %10.0f req/s   %.2fx nginx\n' "$F" "$(echo "$F / $A" | bc -l)"
  printf '  gateway RSS: idle %d MiB, under load (-> orders) %d MiB\n' $((IDLE_RSS / 1024)) $((LOAD_RSS_C / 1024))
else
  echo "  (orders binary not available: C and D skipped)"
  printf '  gateway RSS: idle %d MiB, under load %d MiB\n' $((IDLE_RSS / 1024)) $((LOAD_RSS_B / 1024))
fi
