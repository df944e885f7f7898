#!/usr/bin/env bash
# OFREP single-flag evaluation throughput: `dimmer serve` against `unleash-edge` (offline mode,
# frontend API) serving the same flag, each loaded by wrk over loopback on this machine.
#
# Needs: wrk (Debian package), unleash-edge (`cargo install unleash-edge --locked`, or
# EDGE=/path/to/unleash-edge). Usage: scripts/bench-ofrep-vs-edge.sh [DURATION_S] [CONNECTIONS]
#
# Dimmer is built outside the checkout and its target directory (BUILD_DIR, default
# $TMPDIR/dimmer-bench-build), so the benchmark never competes with, or reuses, a development
# build. Before timing, every user and country the load rotates through is evaluated on both
# servers and the answers compared: the run stops at the first disagreement, and a timed round
# with any non-2xx answer fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-20}
CONNECTIONS=${2:-64}
EDGE=${EDGE:-unleash-edge}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

BUILD_DIR=${BUILD_DIR:-${TMPDIR:-/tmp}/dimmer-bench-build}
cargo build --release -q -p dimmer-cli --target-dir "$BUILD_DIR"
DIMMER=$BUILD_DIR/release/dimmer

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

# Every answer checked: the 1,024 users x 4 countries the load rotates through, on both servers.
python3 - "$SDK" "$WORK/edge-404" <<'PY'
import json, sys, urllib.error, urllib.request
sdk = sys.argv[1]
edge_404 = 0
def post(url, body, auth):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Authorization": auth, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
checked = 0
for n in range(1024):
    for country in ["us", "fr", "jp", "ca"]:
        user = f"user-{n}"
        s1, d = post("http://127.0.0.1:18080/ofrep/v1/evaluate/flags/new-checkout",
                     {"context": {"targetingKey": user, "userId": user, "country": country}}, "Bearer " + sdk)
        s2, e = post("http://127.0.0.1:18081/api/frontend/features/new-checkout",
                     {"userId": user, "properties": {"country": country}}, "*:development.benchfrontend")
        if s1 != 200 or s2 not in (200, 404):
            sys.exit(f"{user} {country}: HTTP {s1} from dimmer, {s2} from edge")
        dimmer_on = d.get("value") is True
        edge_on = s2 == 200 and bool((e or {}).get("enabled"))
        edge_404 += s2 == 404
        if dimmer_on != edge_on:
            sys.exit(f"{user} {country}: dimmer says {dimmer_on}, edge says {edge_on}")
        checked += 1
print(f"answers: {checked} of {checked} agree (edge answered {edge_404} of them 404: not enabled)")
open(sys.argv[2], "w").write(str(edge_404))
PY

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
    # Edge answers "not enabled" with a 404 on its frontend API; only then is a non-2xx expected.
    if [ "${non2xx:-0}" != 0 ] && { [ "$target" = dimmer ] || [ "$(cat "$WORK/edge-404")" = 0 ]; }; then echo "round $round: $target answered $non2xx requests with a non-2xx status" >&2; exit 1; fi
  done
done
