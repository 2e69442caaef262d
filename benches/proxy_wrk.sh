#!/usr/bin/env bash
# Proxy overhead with an external load generator (wrk): one demo-app instance called directly
# against the same kind of instance behind Keelson's local proxy, and, for reference, behind
# nginx and HAProxy configured the same way (upstream keep-alive, one added response header).
#   cargo build --release && benches/proxy_wrk.sh
# ROUNDS (3) interleaved rounds of DUR (5s) per proxy; REFERENCE=0 skips nginx and HAProxy.
set -euo pipefail
cd "$(dirname "$0")/.."
KEELSON=${KEELSON_BIN:-target/release/keelson}
[ -x "$KEELSON" ] || { echo "no $KEELSON: run 'cargo build --release' first" >&2; exit 1; }
DUR=${DUR:-5s}
ROUNDS=${ROUNDS:-3}
REFERENCE=${REFERENCE:-1}
need=(wrk)
[ "$REFERENCE" = 1 ] && need+=(nginx haproxy)
missing=()
for t in "${need[@]}"; do command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=("${missing[@]/nginx/nginx-light}")
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
PATH=$PATH:/usr/sbin
tmp=$(mktemp -d)
cleanup() {
  "$KEELSON" down --repo "$tmp" >/dev/null 2>&1 || true
  [ -n "${direct:-}" ] && kill "$direct" 2>/dev/null || true
  [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
  [ -f "$tmp/haproxy.pid" ] && kill "$(cat "$tmp/haproxy.pid")" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
printf 'apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n' > "$tmp/env.yaml"
printf 'apiVersion: keelson/v1\nkind: Application\nmetadata: {name: w}\nspec:\n  artifact: {version: "1"}\n  workload: {command: [keelson, demo-app, --port, "{port}"]}\n  health: {http: {path: /healthz}}\n  clusters:\n    - {environment: dev, target: local, capacity: {desired: 1}, traffic: {port: 24444}}\n' > "$tmp/w.yaml"
PATH="$(cd "$(dirname "$KEELSON")" && pwd):$PATH" "$KEELSON" apply --repo "$tmp" --auto-approve >"$tmp/apply.log" 2>&1 ||
  { cat "$tmp/apply.log" >&2; exit 1; }
"$KEELSON" demo-app --port 24445 & direct=$!
sleep 0.3
kill -0 "$direct" 2>/dev/null || { echo "the direct instance did not start (is 24445 free?)" >&2; exit 1; }
targets=("direct 24445" "keelson 24444")
if [ "$REFERENCE" = 1 ]; then
  cat > "$tmp/nginx.conf" <<EOF
worker_processes 2;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  upstream up { server 127.0.0.1:24445; keepalive 64; }
  server {
    listen 127.0.0.1:24446;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; add_header X-Keelson-Server-Group w-dev-v001; }
  }
}
EOF
  nginx -c "$tmp/nginx.conf"
  cat > "$tmp/haproxy.cfg" <<EOF
global
  nbthread 2
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind 127.0.0.1:24447
  http-response set-header X-Keelson-Server-Group w-dev-v001
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:24445
EOF
  haproxy -D -f "$tmp/haproxy.cfg" -p "$tmp/haproxy.pid"
  targets+=("nginx 24446" "haproxy 24447")
fi
sleep 0.5
run() { # name port connections
  wrk -t1 -c"$3" -d"$DUR" --latency "http://127.0.0.1:$2/" |
    awk -v n="$1" -v c="$3" '/Requests\/sec/ {r=$2} / 50%/ {p=$2} END {print n, c, r, p}'
}
for _ in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do run $t 16; done
  for t in "direct 24445" "keelson 24444"; do run $t 1; done
done > "$tmp/runs"
python3 - "$tmp/runs" "$DUR" <<'PY'
import statistics, sys
def us(v):
    return float(v[:-2]) if v.endswith("us") else float(v[:-2]) * 1000 if v.endswith("ms") else float(v[:-1]) * 1e6
runs = {}
for line in open(sys.argv[1]):
    name, conns, rps, p50 = line.split()
    runs.setdefault((name, int(conns)), []).append((float(rps), us(p50)))
med = lambda xs: statistics.median(xs)
print(f"wrk -t1, {sys.argv[2]} a run, median of {len(runs[('direct', 16)])} interleaved runs; one demo-app instance")
d_rps, d_p50 = med([r for r, _ in runs[("direct", 16)]]), med([p for _, p in runs[("direct", 16)]])
print(f"{'':8} {'c16 req/s':>10} {'of direct':>9} {'c16 p50':>9}")
for (name, conns), xs in runs.items():
    if conns != 16:
        continue
    rps, p50 = med([r for r, _ in xs]), med([p for _, p in xs])
    spread = f"{min(r for r, _ in xs) * 100 / d_rps:.0f}-{max(r for r, _ in xs) * 100 / d_rps:.0f}%"
    print(f"{name:8} {rps:>10.0f} {rps * 100 / d_rps:>8.0f}% {p50:>7.0f}us  (runs {spread} of the direct median)")
d1 = med([p for _, p in runs[("direct", 1)]])
k1 = med([p for _, p in runs[("keelson", 1)]])
k16 = med([p for _, p in runs[("keelson", 16)]])
print(f"keelson adds p50 {k1 - d1:.0f}us one request at a time (c1: {d1:.0f}us -> {k1:.0f}us), "
      f"{k16 - d_p50:.0f}us saturated (c16)")
PY
