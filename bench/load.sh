#!/usr/bin/env bash
# Load run of the web API: `lenet5 serve` on loopback, then wrk POSTing a 28x28 image as JSON (and a PNG
# drawing) to /api/predict for a fixed time. Prints requests/s, latency percentiles and errors.
#
#   bench/load.sh [SECONDS] [CONNECTIONS]      (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-16}
port=${LENET5_LOAD_PORT:-18080}
cargo build --release -q
./target/release/lenet5 serve --weights models/lenet5-mnist.safetensors --addr "127.0.0.1:$port" >/dev/null &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$tmp"/*; rmdir "$tmp"' EXIT
tmp=$(mktemp -d)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/api/sample?index=0" | python3 -c 'import json,sys; print(json.dumps({"pixels": json.load(sys.stdin)["pixels"]}))' > "$tmp/body.json"
# A wrk script that POSTs the file $2 with content type $3.
write_lua() {
  cat > "$1" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "$3"
local f = io.open("$2", "rb"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  io.write(string.format("non-2xx or socket errors: %d\n", summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
}
write_lua "$tmp/json.lua" "$tmp/body.json" application/json
write_lua "$tmp/png.lua" tests/fixtures/digits/dark_on_light_4.png image/png
echo "== POST /api/predict, JSON 784 floats, $conns connections, ${secs}s"
wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$tmp/json.lua" "http://127.0.0.1:$port/api/predict"
echo
echo "== POST /api/predict, PNG drawing (decode + MNIST preprocessing), $conns connections, ${secs}s"
wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$tmp/png.lua" "http://127.0.0.1:$port/api/predict"
