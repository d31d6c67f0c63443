#!/usr/bin/env bash
# The quick start's main job: installs what is missing, builds, and runs a
# local three-node cluster on loopback with the order-processing sample's
# services spread over the nodes, then starts order sagas through the API
# gateways — over HTTP with curl and over gRPC with the troupe CLI — some of
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

grpc=${DEMO_GRPC_PORT:-7070}
http=${DEMO_HTTP_PORT:-8080}
cli="$root/build/cli/troupe"

echo "== starting three troupe nodes on 127.0.0.1 (cluster ports $((base + 1))-$((base + 3)))"
echo "   a: the saga manager (store in $work/a-store), the order service, the API gateway"
echo "      and the event bus (each order's end leaves as an event through the outbox"
echo "      into a's embedded broker) (gRPC on 127.0.0.1:$grpc, HTTP on 127.0.0.1:$http)"
echo "   b: inventory and payment (with 5 ms card-network latency)"
echo "   c: shipping, the greeter, a second gateway (gRPC :$((grpc + 1)), HTTP :$((http + 1))),"
echo "      and order_notifications and order_sales, which consume a's events across"
echo "      the cluster, each once"
start a 1 "[sagas, orders, gateway, events]" --store.path "$work/a-store" \
  --gateways.grpc.port "$grpc" --gateways.http.port "$http" --gateways.invocable greeter/greet
wait_for "$work/a.log" "http gateway listening" 20 "${pids[0]}"
start b 2 "[inventory, payment]" --store.path "$work/b-store" --payment.latency 5ms
wait_for "$work/b.log" "joined the cluster" 20 "${pids[1]}"
start c 3 "[shipping, greeter, gateway, events, order_notifications, order_sales]" \
  --store.path "$work/c-store" \
  --gateways.grpc.port $((grpc + 1)) --gateways.http.port $((http + 1))
wait_for "$work/c.log" "joined the cluster" 20 "${pids[2]}"
until curl -sf "http://127.0.0.1:$((base + 101))/readyz" >/dev/null &&
  curl -sf "http://127.0.0.1:$((base + 103))/readyz" >/dev/null; do
  kill -0 "${pids[0]}" "${pids[2]}" || exit 1
  sleep 0.1
done

echo "== cluster as node a sees it (GET http://127.0.0.1:$((base + 101))/cluster):"
curl -s "http://127.0.0.1:$((base + 101))/cluster" | grep -o '"name":"[^"]*","address":"[^"]*"' |
  sed 's/"name":"\([^"]*\)","address":"\([^"]*\)"/   member \1 at \2/'

# One order over HTTP: POST /v1/sagas/order_processing. Prints the saga's id.
start_order() { # gateway port, order id, sku, quantity
  curl -s -X POST "http://127.0.0.1:$1/v1/sagas/order_processing" \
    -H 'content-type: application/json' -H "x-request-id: demo-$2" \
    -d "{\"idempotencyKey\": \"$2\", \"json\": {\"orderId\": \"$2\", \"customer\": \"ada\", \"sku\": \"$3\", \"quantity\": $4}}" |
    grep -o '"id": *"[^"]*"' | head -1 | sed 's/"id": *"\([^"]*\)"/\1/'
}

echo "== 10 orders started over HTTP at node c's gateway, which forwards them to the"
echo "   saga manager on a; order-4 asks for a discontinued item (out of stock) and"
echo "   order-8 for 100 gadgets (card declined): both are compensated"
ids=()
for i in $(seq 1 10); do
  sku=widget qty=2
  [ "$i" = 4 ] && sku=discontinued
  [ "$i" = 8 ] && sku=gadget qty=100
  ids+=("$(start_order $((http + 1)) "order-$i" "$sku" "$qty")")
done
for id in "${ids[@]}"; do
  # Each watch is a server-sent event stream that ends at the saga's end state.
  state=$(curl -sN --max-time 30 "http://127.0.0.1:$http/v1/sagas/$id:watch" |
    grep -o 'SAGA_STATE_[A-Z_]*' | tail -1 | sed 's/SAGA_STATE_//')
  echo "   $id  $state"
done

echo "== the same over gRPC with the troupe CLI: start order-11 and watch it to its end"
echo "   \$ troupe saga start order_processing --key order-11 --watch --input '{\"orderId\": ...}'"
"$cli" --address "127.0.0.1:$grpc" saga start order_processing --key order-11 --watch \
  --input '{"orderId": "order-11", "customer": "grace", "sku": "gizmo", "quantity": 3}' |
  sed 's/^/   /'
echo "   \$ troupe saga list --type order_processing --page-size 5"
"$cli" --address "127.0.0.1:$grpc" saga list --type order_processing --page-size 5 | sed 's/^/   /'
echo "   \$ troupe invoke greeter greet --input '{\"name\": \"Ada\"}'   (a service call from outside)"
"$cli" --address "127.0.0.1:$grpc" invoke greeter greet --input '{"name": "Ada"}' | sed 's/^/   /'

echo "== on node c, order_notifications consumed each order's end event from a's embedded"
echo "   broker (c.log), and order_sales counted the completed ones in batches:"
for _ in $(seq 1 100); do
  [ "$(grep -c 'notifications: ' "$work/c.log")" -ge 11 ] && break
  sleep 0.1
done
grep -h 'notifications: ' "$work/c.log" | sed 's/^.*notifications: /   /'
grep -h 'sales: ' "$work/c.log" | tail -2 | sed 's/^.*sales: /   sales: /'

echo "== saga, gateway and event metrics on node a (GET http://127.0.0.1:$((base + 101))/metrics):"
curl -s "http://127.0.0.1:$((base + 101))/metrics" |
  grep -E '^troupe_saga_ended_total|^troupe_gateway_requests_total|^troupe_outbox_(published_total|backlog_rows)' |
  sed 's/^/   /'

if [ -t 0 ] && [ -z "${DEMO_NO_WAIT:-}" ]; then
  cat <<EOT
== the cluster keeps running; start more sagas yourself:
   curl -X POST http://127.0.0.1:$http/v1/sagas/order_processing -H 'content-type: application/json' \\
     -d '{"json": {"orderId": "mine-1", "customer": "you", "sku": "widget", "quantity": 1}}'
   $cli saga start order_processing --watch --input '{"orderId": "mine-2", "customer": "you", "sku": "gizmo", "quantity": 2}'
   $cli saga get <id>      curl http://127.0.0.1:$http/v1/sagas/<id>
   press Enter (or Ctrl-C) to stop the cluster
EOT
  read -r _ || true
fi

echo "== shutting down gracefully (SIGTERM)"
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()
grep -h "node [a-z]* stopped" "$work"/*.log | sed 's/^[^]]*] /   /'
echo "== demo complete; node logs are in $work"
