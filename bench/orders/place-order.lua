-- wrk script: POST /v1/orders with a fresh Idempotency-Key per request and a random
-- product among those listed in $PRODUCTS_FILE (one uuid per line).
local counter = 0
local thread_id = 0
local products = {}
local token = os.getenv("TOKEN")

local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid
  for line in io.lines(os.getenv("PRODUCTS_FILE")) do
    table.insert(products, line)
  end
  math.randomseed(os.time() + thread_id)
end

function request()
  counter = counter + 1
  local product = products[math.random(#products)]
  local body = '{"items":[{"product_id":"' .. product .. '","quantity":1}]}'
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = "bench-" .. os.time() .. "-" .. thread_id .. "-" .. counter,
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", "/v1/orders", headers, body)
end

function done(summary, latency, requests)
  io.write(string.format("non_2xx_or_errors %d\n", summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("p50_ms %.2f p99_ms %.2f\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
