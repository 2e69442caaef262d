#!/usr/bin/env bash
# Keelson's test command: installs what the tests need, then runs format check, clippy and every
# test. Safe to run on a fresh machine and again on a used one. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

step "system packages (git, OpenSSL headers and tool, sshd, Prometheus, curl, Chromium, Node.js, PostgreSQL)"
need=""
command -v git >/dev/null || need="$need git"
dpkg -s libssl-dev >/dev/null 2>&1 || need="$need libssl-dev"
dpkg -s pkg-config >/dev/null 2>&1 || need="$need pkg-config"
# A real sshd for the ssh transport tests (git_ssh, daemon over ssh).
{ [ -x /usr/sbin/sshd ] && command -v ssh-keyscan >/dev/null; } || need="$need openssh-server openssh-client"
# A real Prometheus for the canary analysis tests (they run their own server, not the service).
[ -x /usr/bin/prometheus ] || need="$need prometheus"
# curl: the verification checks in the tests call the cluster with it.
command -v curl >/dev/null || need="$need curl"
# Chromium and Node.js for the dashboard's browser tests (Playwright drives Debian's Chromium).
[ -x /usr/bin/chromium ] || need="$need chromium"
command -v node >/dev/null || need="$need nodejs"
command -v npm >/dev/null || need="$need npm"
# PostgreSQL for the shared store and the replica tests (they run their own throwaway servers,
# as the postgres user: initdb refuses root).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
# openssl: the TLS store tests make a throwaway authority and server certificate with it.
command -v openssl >/dev/null || need="$need openssl"
if [ -n "$need" ]; then
  # Install without starting services: openssh-server would otherwise start a system sshd.
  no_start=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    no_start=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need
  if [ -n "$no_start" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
git --version
ls /usr/lib/postgresql/*/bin/postgres

step "moto (the AWS emulator the EC2 tests start)"
# Pinned, in a virtualenv under target/: the tests start target/moto-venv/bin/moto_server.
if ! target/moto-venv/bin/moto_server --help >/dev/null 2>&1; then
  python3 -m venv target/moto-venv
  target/moto-venv/bin/pip install -q --disable-pip-version-check 'moto[server]==5.2.5'
fi
target/moto-venv/bin/python -c 'import moto; print("moto", moto.__version__)'

step "playwright-core (drives Chromium in the dashboard tests)"
# Pinned, under target/: the tests run node with target/node/node_modules.
if [ ! -d target/node/node_modules/playwright-core ]; then
  mkdir -p target/node
  npm install --silent --no-audit --no-fund --prefix target/node playwright-core@1.64.1
fi
node -e 'console.log("playwright-core", require(process.argv[1] + "/package.json").version)' "$PWD/target/node/node_modules/playwright-core"

step "format"
cargo fmt --all -- --check

step "tests (unit, integration, golden, property)"
# Build the tests once; clippy below reuses the dependency graph's downloads and cache.
cargo test --all-targets --no-fail-fast

step "no processes left behind by the tests"
sleep 1
leaked=$(pgrep -af "$PWD/target/debug/keelson (demo-app|local-agent|up)" || true)
if [ -n "$leaked" ]; then
  echo "the tests left these processes running:"; echo "$leaked"
  pkill -f "$PWD/target/debug/keelson (demo-app|local-agent|up)" || true
  exit 1
fi
# PostgreSQL servers the tests started (in /tmp/keelson-pg*) are stopped when they end.
pg_left=$(pgrep -af "postgres -D /tmp/keelson-pg" || true)
if [ -n "$pg_left" ]; then
  echo "the tests left these PostgreSQL servers running:"; echo "$pg_left"
  pkill -f "postgres -D /tmp/keelson-pg" || true
  exit 1
fi
echo "none"

step "clippy"
cargo clippy --all-targets -- -D warnings

step "done"
