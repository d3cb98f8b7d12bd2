#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a figure that
# the machine's load does not move (bench/RESULTS.md), for comparing two
# builds where wrk's throughput is lost in the noise.
#
#   bench/instructions.sh [AUTHQL_BINARY...]    (default target/release/authql)
#
# For each binary: a fresh SQLite database and user, the server under
# callgrind with instrumentation off; then for /healthz, /auth/verify and a
# cached `me`, BENCH_WARMUP requests (default 200) uninstrumented, then
# BENCH_REQUESTS (default 1000) counted, one at a time on one connection.
# Prints the server's user-space instructions per request. Kernel time is
# not counted, and SHA-256 runs valgrind's fallback (no SHA extensions),
# about 6,700 instructions per token check more than on the real CPU.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="python3 $ROOT/bench/bench.py"
REQUESTS=${BENCH_REQUESTS:-1000}
WARMUP=${BENCH_WARMUP:-200}
PASSWORD="bench-instructions-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
command -v valgrind >/dev/null 2>&1 || apt-get install -y valgrind >/dev/null
[[ $# -gt 0 ]] || set -- "$ROOT/target/release/authql"

for authql in "$@"; do
    dir=$(mktemp -d)
    db="sqlite://$dir/authql.db?mode=rwc"
    "$authql" migrate --database-url "$db" >/dev/null 2>&1
    printf '%s\n' "$PASSWORD" |
        "$authql" user create bench_me --password-stdin --database-url "$db" --bcrypt-cost 4 >/dev/null 2>&1
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.%p" \
        "$authql" serve --database-url "$db" --listen 127.0.0.1:0 --bcrypt-cost 4 \
        --log-format json 2>"$dir/server.log" &
    server=$!
    address=$($PY wait-listen "$dir/server.log" 120)
    $PY sanity "http://$address" bench_me "$PASSWORD" >/dev/null
    # The token of load.sh's scenarios: last used an hour ago.
    $PY tokens "$dir/authql.db" bench_me 1 "$dir/token.txt" 3600
    token=$(cat "$dir/token.txt")
    line="$(basename "$authql"):"
    for kind in healthz verify me; do
        $PY requests "$address" "$kind" "$WARMUP" "$token"
        callgrind_control -z "$server" >/dev/null 2>&1
        callgrind_control -i on "$server" >/dev/null 2>&1
        $PY requests "$address" "$kind" "$REQUESTS" "$token"
        callgrind_control -i off "$server" >/dev/null 2>&1
        callgrind_control -d "$kind" "$server" >/dev/null 2>&1
        dump=""
        for _ in $(seq 100); do
            dump=$(ls "$dir"/callgrind.*.* 2>/dev/null | head -1)
            [[ -n "$dump" ]] && grep -q '^totals:' "$dump" && break
            sleep 0.2
        done
        [[ -n "$dump" ]] || { echo "no callgrind dump for $kind" >&2; exit 1; }
        total=$(awk '/^totals:/ {print $2}' "$dump")
        line+=" $kind $((total / REQUESTS))"
        rm -f "$dump"
    done
    echo "$line  (instructions per request)"
    kill "$server"
    wait "$server" 2>/dev/null || true
    rm -rf "$dir"
done
