#!/usr/bin/env bash
# OFREP single-flag evaluation throughput: `dimmer serve` against `unleash-edge` (offline mode,
# frontend API) serving the same flag, each loaded by wrk over loopback on this machine.
#
# Needs: wrk (Debian package), unleash-edge (`cargo install unleash-edge --locked`, or
# EDGE=/path/to/unleash-edge). Usage: scripts/bench-ofrep-vs-edge.sh [DURATION_S] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-20}
CONNECTIONS=${2:-64}
EDGE=${EDGE:-unleash-edge}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release -q -p dimmer-cli
DIMMER=target/release/dimmer

# One flag, as Unleash defines it: 50% of users (by userId) among those in us, ca or fr.
cat > "$WORK/unleash.json" <<'JSON'
{"version": 1, "features": [{"name": "new-checkout", "enabled": true, "strategies": [
  {"name": "flexibleRollout", "parameters": {"rollout": "50", "stickiness": "userId", "groupId": "new-checkout"},
   "constraints": [{"contextName": "country", "operator": "IN", "values": ["us", "ca", "fr"]}]}]}]}
JSON

# Dimmer serves the same flag, imported (same buckets, same engine as native flags).
$DIMMER import unleash "$WORK/unleash.json" --env production > "$WORK/native.json" 2>/dev/null
$DIMMER serve --listen 127.0.0.1:18080 --data-dir "$WORK/dimmer" > "$WORK/serve.out" 2>/dev/null &
for _ in $(seq 1 50); do grep -q "admin token" "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
ADMIN=$(awk '/admin token/ {print $NF}' "$WORK/serve.out")
python3 - "$WORK/native.json" "$ADMIN" <<'PY'
import json, sys, urllib.request
flags = json.load(open(sys.argv[1]))["flags"]
for key, flag in flags.items():
    body = dict(flag, key=key)
    req = urllib.request.Request("http://127.0.0.1:18080/api/v1/flags", data=json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + sys.argv[2], "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
PY
SDK=$(DIMMER_TOKEN=$ADMIN $DIMMER --server http://127.0.0.1:18080 --json token create bench --scope sdk --env production | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

$EDGE --port 18081 --interface 127.0.0.1 offline --bootstrap-file "$WORK/unleash.json" --frontend-tokens "*:development.benchfrontend" --client-tokens "*:development.benchclient" > "$WORK/edge.log" 2>&1 &
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18081/internal-backstage/health >/dev/null && break; sleep 0.1; done

cat > "$WORK/dimmer.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $SDK"
local countries = {"us", "fr", "jp", "ca"}
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"context":{"targetingKey":"user-%d","userId":"user-%d","country":"%s"}}', n % 1024, n % 1024, countries[n % 4 + 1])
  return wrk.format(nil, "/ofrep/v1/evaluate/flags/new-checkout", nil, body)
end
LUA
cat > "$WORK/edge.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "*:development.benchfrontend"
local countries = {"us", "fr", "jp", "ca"}
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"userId":"user-%d","properties":{"country":"%s"}}', n % 1024, countries[n % 4 + 1])
  return wrk.format(nil, "/api/frontend/features/new-checkout", nil, body)
end
LUA

echo "sanity: dimmer  $(curl -s -X POST -H "Authorization: Bearer $SDK" -H 'Content-Type: application/json' -d '{"context":{"targetingKey":"user-1","userId":"user-1","country":"fr"}}' http://127.0.0.1:18080/ofrep/v1/evaluate/flags/new-checkout)"
echo "sanity: edge    $(curl -s -X POST -H 'Authorization: *:development.benchfrontend' -H 'Content-Type: application/json' -d '{"userId":"user-1","properties":{"country":"fr"}}' http://127.0.0.1:18081/api/frontend/features/new-checkout) (HTTP $(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: *:development.benchfrontend' -H 'Content-Type: application/json' -d '{"userId":"user-1","properties":{"country":"fr"}}' http://127.0.0.1:18081/api/frontend/features/new-checkout))"

for round in 1 2; do
  for target in dimmer edge; do
    port=18080; [ "$target" = edge ] && port=18081
    wrk -t1 -c"$CONNECTIONS" -d5s -s "$WORK/$target.lua" "http://127.0.0.1:$port" > /dev/null   # warm-up
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/$target.lua" "http://127.0.0.1:$port")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    printf 'round %s  %-7s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' "$round" "$target" "$rps" "$p50" "$p99" "${non2xx:-0}"
  done
done
