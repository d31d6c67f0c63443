#!/usr/bin/env bash
# The quick start's main job: installs what is missing, builds, and runs a
# local three-node cluster on loopback. Node c runs the greeter service,
# node a calls it through the cluster registry, node b is a plain member.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo

node="$root/build/samples/troupe-node"
base=${DEMO_PORT:-4100}
work="$root/build/demo-logs"
rm -rf "$work" && mkdir -p "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

start() { # name, index, services, extra args...
  local name=$1 i=$2 services=$3
  shift 3
  "$node" --node.name "$name" --cluster.port $((base + i)) --status.port $((base + 100 + i)) \
    --cluster.seeds "127.0.0.1:$((base + 1))" --services.enabled "$services" "$@" \
    >"$work/$name.log" 2>&1 &
  pids+=($!)
}

wait_for() { # file, text, seconds, pid
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$4" 2>/dev/null; then
      echo "demo: gave up waiting for '$2' in $1:" >&2
      cat "$1" >&2
      exit 1
    fi
    sleep 0.1
  done
}

echo "== starting three troupe nodes on 127.0.0.1 (cluster ports $((base + 1))-$((base + 3)))"
echo "   a: seed, plain member;  c: runs the 'greeter' service;  b: runs a caller that greets it"
start a 1 "[]"
wait_for "$work/a.log" "cluster endpoint listening" 20 "${pids[0]}"
start c 3 greeter
wait_for "$work/c.log" "joined the cluster" 20 "${pids[1]}"
start b 2 caller --caller.count 5 --caller.interval 200ms
wait_for "$work/b.log" "joined the cluster" 20 "${pids[2]}"

echo "== cluster as node a sees it (GET http://127.0.0.1:$((base + 101))/cluster):"
curl -s "http://127.0.0.1:$((base + 101))/cluster" | grep -o '"name":"[^"]*","address":"[^"]*"' |
  sed 's/"name":"\([^"]*\)","address":"\([^"]*\)"/   member \1 at \2/'

echo "== node b greets the service 'greeter' (found on node c through the registry):"
wait_for "$work/b.log" "caller finished" 30 "${pids[2]}"
grep -E "call [0-9]+ (answered|failed)|caller finished" "$work/b.log" | sed 's/^[^]]*] /   b: /'
grep -E "greeting caller" "$work/c.log" | sed 's/^[^]]*] \[/   c: [/'

echo "== shutting down gracefully (SIGTERM)"
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()
grep -h "node [a-z]* stopped" "$work"/*.log | sed 's/^[^]]*] /   /'
echo "== demo complete; node logs are in $work"
