#!/usr/bin/env bash
# Spurious-fence soak: a two-broker floe dev cluster under produce and consume load while CPU hogs
# keep both cores busy; prints the controller's fence counters before and after and each service's
# restarts. A live broker fenced by the controller shows up as a fence here.
#   Tools/bench-fence-soak.sh [SECONDS]   (default 180; FLOE_BIN, default .build/release; BASE_PORT, default 39092)
set -euo pipefail
seconds=${1:-180}
bin=${FLOE_BIN:-.build/release}
port=${BASE_PORT:-39092}
data=$(mktemp -d /tmp/floe-fence-soak.XXXXXX)
"$bin/floe" dev up --data-dir "$data" --base-port "$port" --brokers-per-zone 2 --log-level warning > "$data/dev.log" 2>&1 &
dev=$!
hogs=()
cleanup() { kill "${hogs[@]}" 2>/dev/null || true; kill -TERM "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 150); do grep -q "Ctrl-C stops" "$data/dev.log" && break; sleep 0.2; done
grep -q "Ctrl-C stops" "$data/dev.log" || { cat "$data/dev.log"; exit 1; }
admin=$(python3 -c "import json,sys; print([s['admin'] for s in json.load(open(sys.argv[1]))['services'] if s['kind']=='controller'][0])" "$data/cluster.json")
fences() { curl -s "http://$admin/metrics" | awk '$1=="floe_controller_session_fences_total"{f=$2} $1=="floe_controller_session_close_fences_total"{c=$2} END{printf "fences %s (on a closed connection %s)\n", f+0, c+0}'; }
echo "before: $(fences); $(uptime)"
for _ in 1 2 3 4; do timeout "$seconds" sh -c 'while :; do :; done' & hogs+=($!); done
"$bin/floe" bench produce --bootstrap "127.0.0.1:$port" --partitions 16 --producers 4 --records-per-batch 16 --in-flight 4 \
    --duration "$seconds" --consume | tail -4
echo "after: $(fences); $(uptime)"
python3 -c "import json,sys; print('restarts:', ', '.join(f\"{s['kind']}-{s['node_id']} {s['restarts']}\" for s in json.load(open(sys.argv[1]))['services'] if s.get('pid') or s['restarts']))" "$data/cluster.json"
