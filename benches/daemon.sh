#!/usr/bin/env bash
# Daemon benchmarks: webhook-to-first-step latency, idle poll CPU and re-plan time on a
# 2,000-application repository, /api/v1/status under load, and the daemon's memory.
#   cargo build --release && benches/daemon.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KEELSON=$(realpath "${KEELSON_BIN:-target/release/keelson}")
[ -x "$KEELSON" ] || { echo "no $KEELSON: run 'cargo build --release' first" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; "$KEELSON" down --state-dir "$tmp/s1" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
g() { git -C "$1" -c user.name=b -c user.email=b@example.com "${@:2}"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in clock ticks
hz=$(getconf CLK_TCK)

echo "== 1. webhook -> first actuation step (local target, 1 app)"
mkdir -p "$tmp/w1" && g "$tmp/w1" init -q -b main
printf 'apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n' > "$tmp/w1/env.yaml"
app() { printf 'apiVersion: keelson/v1\nkind: Application\nmetadata: {name: hook}\nspec:\n  artifact: {version: "%s"}\n  workload: {command: [keelson, demo-app, --port, "{port}"]}\n  health: {http: {path: /healthz}}\n  clusters:\n    - {environment: dev, target: local, capacity: {desired: 1}, traffic: {port: 24555}}\n' "$1" > "$tmp/w1/app.yaml"; }
app 0; g "$tmp/w1" add -A; g "$tmp/w1" commit -qm 0; git clone -q --bare "$tmp/w1" "$tmp/b1"
KEELSON_WEBHOOK_SECRET=s KEELSON_LOG=info "$KEELSON" up --repo "$tmp/b1" --state-dir "$tmp/s1" --interval 1h --drift-interval 1h --listen 127.0.0.1:24556 --log-format json 2> "$tmp/up1.log" & pids+=($!)
for _ in $(seq 100); do curl -sf localhost:24556/readyz >/dev/null && break; sleep 0.1; done
lat=()
for i in $(seq 1 9); do
  app "$i"; g "$tmp/w1" commit -qam "$i"; g "$tmp/w1" push -q "$tmp/b1" main
  body='{"ref":"refs/heads/main"}'
  sig="sha256=$(printf '%s' "$body" | openssl dgst -sha256 -hmac s -hex | awk '{print $NF}')"
  before=$(grep -c '"step":1' "$tmp/up1.log" || true)
  t0=$(date +%s%N)
  curl -s -o /dev/null -H "x-github-event: push" -H "x-hub-signature-256: $sig" --data "$body" localhost:24556/webhooks/github
  while [ "$(grep -c '"step":1' "$tmp/up1.log" || true)" -le "$before" ]; do sleep 0.005; done
  lat+=($(( ($(date +%s%N) - t0) / 1000000 )))
  while ! grep -q "\"version\":\"$i\"" <(curl -s localhost:24555/); do sleep 0.05; done
done
sorted=$(printf '%s\n' "${lat[@]}" | sort -n)
echo "webhook -> first step started, ms (9 pushes): $(echo $sorted) ; p50 $(sed -n 5p <<<"$sorted") ms"

echo "== 2. 2,000 applications: idle poll CPU, re-plan, status under load, memory"
python3 benches/gen_repo.py "$tmp/w2" --apps 2000 >/dev/null
# Clusters on a Kubernetes target this build cannot observe: loaded, validated and planned,
# never actuated (so no 12,000 processes).
for e in dev staging prod; do
  python3 - "$tmp/w2/environments/$e.yaml" <<'PY'
import sys, re
p = sys.argv[1]; s = open(p).read()
env = p.rsplit("/", 1)[-1].removesuffix(".yaml")
# One namespace per environment: the same cluster name twice in one namespace is refused.
s = re.sub(r"  targets:\n", "  targets:\n    - {name: k8s, provider: kubernetes, kubernetes: {namespace: bench-%s}}\n" % env, s, count=1)
open(p, "w").write(s)
PY
done
# Kubernetes clusters need an image and a kubernetes section.
sed -i -e 's/target: local/target: k8s/' -e 's|^  artifact:$|  kubernetes: {containerPort: 8080}\n  artifact:\n    image: registry.example/bench/app|' "$tmp"/w2/apps/*.yaml
g "$tmp/w2" init -q -b main; g "$tmp/w2" add -A; g "$tmp/w2" commit -qm gen; git clone -q --bare "$tmp/w2" "$tmp/b2"
KEELSON_API_TOKEN=t KEELSON_LOG=info "$KEELSON" up --repo "$tmp/b2" --state-dir "$tmp/s2" --interval 100ms --drift-interval 1h --listen 127.0.0.1:24557 --log-format json 2> "$tmp/up2.log" & d2=$!; pids+=($d2)
for _ in $(seq 300); do grep -q "new revision is valid" "$tmp/up2.log" && break; sleep 0.1; done
grep -q "new revision is valid" "$tmp/up2.log" || { echo "the generated repository was not accepted:" >&2; tail -5 "$tmp/up2.log" >&2; exit 1; }
sleep 2
c0=$(ticks "$d2"); sleep 10; c1=$(ticks "$d2")
echo "idle: $(( (c1 - c0) * 1000 / hz )) ms CPU over 10 s of polling every 100 ms (~100 polls): $(python3 -c "print(round(($c1-$c0)*1000/$hz/100, 2))") ms per poll"
sed -i -E '0,/version: "/s/(version: "[^"]*)"/\1-b"/' "$tmp/w2/apps/app-0007.yaml"
g "$tmp/w2" commit -qam one; g "$tmp/w2" push -q "$tmp/b2" main
c0=$(ticks "$d2"); n0=$(grep -c "new revision is valid" "$tmp/up2.log")
while [ "$(grep -c "new revision is valid" "$tmp/up2.log")" -le "$n0" ]; do sleep 0.01; done
sleep 1; c1=$(ticks "$d2")
echo "one file of 2,000 changed: fetch + load + validate + compile + plan took $(( (c1 - c0) * 1000 / hz )) ms CPU"
wrk -t1 -c16 -d5s http://127.0.0.1:24557/api/v1/status | awk '/Requests\/sec/ {print "/api/v1/status: " $2 " requests/s (wrk -t1 -c16)"}'
echo "daemon peak RSS with 2,000 applications loaded: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$d2/status)"
