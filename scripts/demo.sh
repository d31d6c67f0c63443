#!/usr/bin/env bash
# The quick start's main job: installs what is missing, builds, and runs a
# local three-node cluster on loopback with the order-processing sample's
# services spread over the nodes; a fourth node starts order sagas, some of
# which fail on purpose and compensate.
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
echo "   a: the saga manager (store in $work/a-store) and the order service"
echo "   b: inventory and payment (with 5 ms card-network latency);  c: shipping and greeter"
start a 1 "[sagas, orders]" --store.path "$work/a-store"
wait_for "$work/a.log" "cluster endpoint listening" 20 "${pids[0]}"
start b 2 "[inventory, payment]" --store.path "$work/b-store" --payment.latency 5ms
wait_for "$work/b.log" "joined the cluster" 20 "${pids[1]}"
start c 3 "[shipping, greeter]" --store.path "$work/c-store"
wait_for "$work/c.log" "joined the cluster" 20 "${pids[2]}"

echo "== cluster as node a sees it (GET http://127.0.0.1:$((base + 101))/cluster):"
curl -s "http://127.0.0.1:$((base + 101))/cluster" | grep -o '"name":"[^"]*","address":"[^"]*"' |
  sed 's/"name":"\([^"]*\)","address":"\([^"]*\)"/   member \1 at \2/'

echo "== node d joins and starts 20 order sagas; every 5th fails on purpose"
echo "   (out of stock, or card declined) and is compensated:"
start d 4 "[orders_client, caller]" --orders_client.count 20 --orders_client.concurrency 8 \
  --caller.count 3 --caller.interval 100ms
wait_for "$work/d.log" "orders client finished" 60 "${pids[3]}"
grep -E "order order-[0-9]+ (completed|compensated|failed_compensation|cancelled)" "$work/d.log" |
  sed 's/^[^]]*] /   d: /' | sort -t- -k2 -n
grep -E "orders client finished" "$work/d.log" | sed 's/^[^]]*] /   d: /'
wait_for "$work/d.log" "caller finished" 30 "${pids[3]}"
echo "== node d also greeted the 'greeter' service on node c through the registry:"
grep -E "call [0-9]+ (answered|failed)" "$work/d.log" | sed 's/^[^]]*] /   d: /'

echo "== saga metrics on node a (GET http://127.0.0.1:$((base + 101))/metrics):"
curl -s "http://127.0.0.1:$((base + 101))/metrics" | grep -E '^troupe_saga_ended_total' | sed 's/^/   /'

echo "== start and watch 3 more orders from another node while the cluster runs:"
echo "   $node --node.name e --cluster.port 0 --status.port 0 --cluster.seeds 127.0.0.1:$((base + 1)) \\"
echo "     --services.enabled '[orders_client]' --orders_client.key_prefix more --orders_client.count 3"
"$node" --node.name e --cluster.port 0 --status.port 0 --cluster.seeds "127.0.0.1:$((base + 1))" \
  --services.enabled '[orders_client]' --orders_client.key_prefix more --orders_client.count 3 \
  --orders_client.fail_every 0 >"$work/e.log" 2>&1 &
pids+=($!)
wait_for "$work/e.log" "orders client finished" 60 "${pids[4]}"
grep -E "order more-[0-9]+ (completed|compensated)|orders client finished" "$work/e.log" |
  sed 's/^[^]]*] /   e: /'

echo "== shutting down gracefully (SIGTERM)"
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()
grep -h "node [a-z]* stopped" "$work"/*.log | sed 's/^[^]]*] /   /'
echo "== demo complete; node logs are in $work"
