#!/usr/bin/env bash
# Runs the graphql-http package's audits against a fresh authql on a
# temporary SQLite database, with the package installed from the npm
# registry into a temporary directory. Prints every rule that is not "ok"
# and the counts; exits non-zero on any MUST ("error").
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$tmp"' EXIT

cargo build --quiet --bin authql
(cd "$tmp" && npm init -y >/dev/null && npm install --silent graphql-http@1.23.1 graphql@16 >/dev/null)
port=18${RANDOM:0:3}
target/debug/authql serve --database-url "sqlite://$tmp/authql.db?mode=rwc" \
    --listen "127.0.0.1:$port" 2>"$tmp/server.log" &
server=$!
for _ in $(seq 1 50); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
cp scripts/graphql-http-audit.mjs "$tmp/"
(cd "$tmp" && node graphql-http-audit.mjs "http://127.0.0.1:$port/graphql") | tee "$tmp/out"
! grep -q '^ERROR' "$tmp/out"
