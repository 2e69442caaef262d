#!/usr/bin/env bash
# Proxy overhead with an external load generator (wrk): one demo-app instance called directly
# against the same kind of instance behind Keelson's local proxy.
#   cargo build --release && benches/proxy_wrk.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KEELSON=${KEELSON_BIN:-target/release/keelson}
[ -x "$KEELSON" ] || { echo "no $KEELSON: run 'cargo build --release' first" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
DUR=${DUR:-5s}
tmp=$(mktemp -d)
cleanup() { "$KEELSON" down --repo "$tmp" >/dev/null 2>&1 || true; kill "${direct:-0}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
printf 'apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n' > "$tmp/env.yaml"
printf 'apiVersion: keelson/v1\nkind: Application\nmetadata: {name: w}\nspec:\n  artifact: {version: "1"}\n  workload: {command: [keelson, demo-app, --port, "{port}"]}\n  health: {http: {path: /healthz}}\n  clusters:\n    - {environment: dev, target: local, capacity: {desired: 1}, traffic: {port: 24444}}\n' > "$tmp/w.yaml"
"$KEELSON" apply --repo "$tmp" --auto-approve >/dev/null 2>&1
"$KEELSON" demo-app --port 24445 & direct=$!
sleep 0.5
run() { wrk -t1 -c16 -d"$DUR" --latency "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2} / 50%/ {print $2}'; }
d=$(run 24445); d50=$(sed -n 1p <<<"$d"); drps=$(sed -n 2p <<<"$d")
p=$(run 24444); p50=$(sed -n 1p <<<"$p"); prps=$(sed -n 2p <<<"$p")
echo "wrk -t1 -c16 -d$DUR, one demo-app instance"
echo "direct: $drps req/s, p50 $d50"
echo "proxy:  $prps req/s, p50 $p50"
python3 - "$d50" "$p50" "$drps" "$prps" <<'PY'
import sys
def us(v):
    return float(v[:-2]) if v.endswith("us") else float(v[:-2]) * 1000 if v.endswith("ms") else float(v[:-1]) * 1e6
d, p, dr, pr = us(sys.argv[1]), us(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"proxy adds p50 {p - d:.0f}us; throughput {pr * 100 / dr:.0f}% of direct")
PY
