#!/usr/bin/env bash
# Compares `keelson validate` with ajv-cli (JSON Schema only) on a generated 2,000-application
# repository: best wall time and peak RSS over RUNS runs of each.
#
#   cargo build --release && benches/compare_validate.sh
#
# Environment:
#   KEELSON_BIN  Keelson binary (default target/release/keelson); this script never builds it
#   APPS         applications to generate (default 2000)
#   RUNS         runs per tool (default 3)
#   AJV_BIN      ajv-cli to use; else `ajv` on PATH; else ajv-cli is installed with npm into
#                ${XDG_CACHE_HOME:-$HOME/.cache}/keelson-bench/node (nothing lands in the repo)
#   KEEP_TMP=1   keep the temporary directory (generated repository, logs)
#
# What is compared is not the same work: ajv checks each apps/*.yaml against
# schemas/application.schema.json; keelson also reads the environments, checks the rules a schema
# cannot state (names, references, ports, capacities, ...) and compiles the desired state.
set -euo pipefail

orig_pwd=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

apps=${APPS:-2000}
runs=${RUNS:-3}

keelson=${KEELSON_BIN:-target/release/keelson}
if [[ -n ${KEELSON_BIN:-} && $keelson != /* ]]; then
    keelson=$orig_pwd/$keelson
fi
if [[ ! -x $keelson ]]; then
    echo "error: no Keelson binary at $keelson" >&2
    echo "       run \`cargo build --release\` first (or set KEELSON_BIN to a built binary)" >&2
    exit 1
fi

# GNU time, for the peak RSS.
if [[ ! -x /usr/bin/time ]]; then
    echo "/usr/bin/time is missing; installing the Debian package \`time\`" >&2
    sudo=
    if [[ $(id -u) -ne 0 ]]; then sudo=sudo; fi
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq time >&2
fi

# ajv-cli.
if [[ -n ${AJV_BIN:-} ]]; then
    ajv=$AJV_BIN
elif command -v ajv >/dev/null 2>&1; then
    ajv=$(command -v ajv)
else
    prefix=${XDG_CACHE_HOME:-$HOME/.cache}/keelson-bench/node
    ajv=$prefix/node_modules/.bin/ajv
    if [[ ! -x $ajv ]]; then
        if ! command -v npm >/dev/null 2>&1; then
            echo "error: ajv-cli is not installed and npm is missing; install Node.js and npm" >&2
            exit 1
        fi
        echo "installing ajv-cli into $prefix" >&2
        mkdir -p "$prefix"
        npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error ajv-cli@5 >&2
    fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keelson-bench.XXXXXX")
if [[ ${KEEP_TMP:-0} == 1 ]]; then
    echo "keeping $tmp" >&2
else
    trap 'rm -rf "$tmp"' EXIT
fi
repo=$tmp/repo

python3 benches/gen_repo.py "$repo" --apps "$apps"

now_ns() { date +%s%N; }

# measure NAME CMD...: runs CMD $runs times (stdout and stderr to $tmp/NAME.log), fails if it
# exits non-zero, and sets best_ms (lowest wall time) and max_kib (highest peak RSS).
measure() {
    local name=$1
    shift
    best_ms=
    max_kib=0
    local i start end ms kib
    for ((i = 1; i <= runs; i++)); do
        start=$(now_ns)
        if ! /usr/bin/time -v -o "$tmp/$name.time" "$@" >"$tmp/$name.log" 2>&1; then
            echo "error: $name failed (run $i):" >&2
            tail -n 20 "$tmp/$name.log" >&2
            exit 1
        fi
        end=$(now_ns)
        ms=$(((end - start) / 1000000))
        kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/$name.time")
        if [[ -z $best_ms || $ms -lt $best_ms ]]; then best_ms=$ms; fi
        if ((kib > max_kib)); then max_kib=$kib; fi
    done
}

echo "keelson: $keelson" >&2
measure keelson "$keelson" validate --repo "$repo"
k_ms=$best_ms k_kib=$max_kib
echo "keelson: $(tail -n 1 "$tmp/keelson.log")" >&2

# ajv-cli 5 parses .yaml/.yml data files itself (js-yaml), so no conversion to JSON is needed;
# the glob is quoted so that ajv expands it, not the shell. The schema uses no `format`, so
# ajv-formats is not needed, and it compiles in ajv's strict mode.
ajv_version=$(node -p "require('$(dirname "$(readlink -f "$ajv")")/../package.json').version" 2>/dev/null || true)
echo "ajv:     $ajv (ajv-cli ${ajv_version:-version unknown})" >&2
measure ajv "$ajv" validate --spec=draft2020 -s schemas/application.schema.json -d "$repo/apps/*.yaml"
a_ms=$best_ms a_kib=$max_kib
valid=$(grep -c ' valid$' "$tmp/ajv.log" || true)
echo "ajv:     $valid of $apps files valid (YAML read by ajv-cli itself)" >&2
if [[ $valid -ne $apps ]]; then
    echo "error: ajv did not report every application file as valid; see $tmp/ajv.log" >&2
    exit 1
fi

echo
echo "validate: $apps applications, $((3 * apps)) clusters; best wall of $runs runs, max peak RSS"
awk -v km="$k_ms" -v kk="$k_kib" -v am="$a_ms" -v ak="$a_kib" 'BEGIN {
    printf "%-16s %10s %14s\n", "tool", "wall ms", "peak RSS MiB"
    printf "%-16s %10d %14.1f\n", "keelson", km, kk / 1024
    printf "%-16s %10d %14.1f\n", "ajv-cli", am, ak / 1024
    printf "%-16s %10s %14s\n", "ajv / keelson", \
        (km > 0 ? sprintf("%.2fx", am / km) : "n/a"), (kk > 0 ? sprintf("%.2fx", ak / kk) : "n/a")
}'
