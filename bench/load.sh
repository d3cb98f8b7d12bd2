#!/usr/bin/env bash
# The load benchmark (issues 5, 14 and 16): one command from a clean checkout.
#
#   bench/load.sh
#
# Builds authql and bench/floor in release mode, then BENCH_RUNS times
# (default 3): starts them on loopback over a fresh SQLite database with
# bcrypt cost 12, creates users, times one bcrypt verification, and runs
# each scenario with wrk for BENCH_DURATION seconds (default 10):
#
#   bare         GET / on bench/floor, a bare poem server   32 connections
#                answering constant JSON: the floor every ratio is taken to
#   healthz      GET /healthz, authql's middleware and nothing else     32
#   verify       GET /auth/verify with a bearer token (forward auth)    32
#   me-cached    POST /graphql { me { id username } }                   32
#   me-quiet     the same on an instance whose --last-used-interval is a
#                year, so no use is ever due to be noted: what noting
#                lastUsedAt at the default interval costs me-cached
#   me-uncached  the same on an instance with --cache-capacity 0        32
#   login        the login mutation (throttling raised)      8 connections
#   storm        me-cached (32) and login (8) at once; me's figures reported
#   memory       VmRSS idle, and after BENCH_MEMORY_TOKENS (100,000)
#                distinct tokens have been resolved through the cache;
#                then the same with --cache-capacity 0 and new tokens:
#                what the load leaves resident without the cache
#
# The token of verify and the me scenarios, and the memory scenario's
# tokens, were last used an hour ago (rows written the way the server
# writes them), so at the default interval each use is due to be noted:
# the cost is measured, not skipped.
#
# It fails (non-zero exit) at the first request that errs (a status other
# than 200, a socket error or timeout, a GraphQL "errors" in a body, a body
# or header without the expected user or token) and when a sanity check
# before or after the load fails. It prints one line per figure as it goes,
# then the medians and the issues' ratios as a Markdown table, also written
# to bench/results/<time>/summary.md. A missed target is reported; with
# BENCH_ENFORCE=1 it also makes the exit status 3.
#
# Settings (environment): BENCH_RUNS, BENCH_DURATION, BENCH_MEMORY_TOKENS,
# BENCH_HASH_CONCURRENCY (passed as --hash-concurrency; unset: the
# server's default), BENCH_MEMORY_FLAGS (more flags for the memory
# instance, for experiments such as --cache-capacity 0), BENCH_SKIP_BUILD=1
# (use the binaries already built), BENCH_AUTHQL (another authql binary,
# e.g. an older build to compare with in the same run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"
RUNS=${BENCH_RUNS:-3}
DURATION=${BENCH_DURATION:-10}
MEMORY_TOKENS=${BENCH_MEMORY_TOKENS:-100000}
COST=12
CORES=$(nproc)
# wrk threads for the 32-connection scenarios: one per core.
THREADS=$CORES
export BENCH_DIR

say() { printf '%s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

# --- tools ------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    say "installing wrk from the Debian packages"
    apt-get install -y wrk >/dev/null 2>&1 || {
        apt-get update >/dev/null && apt-get install -y wrk >/dev/null
    } || fail "cannot install wrk (apt-get install -y wrk)"
fi
command -v python3 >/dev/null 2>&1 || fail "python3 is needed"
command -v curl >/dev/null 2>&1 || fail "curl is needed"
PY="python3 $BENCH_DIR/bench.py"

cd "$ROOT"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    say "building (release)"
    cargo build --release --quiet --package authql --bin authql --package authql-bench-floor --bin authql-bench-floor
fi
AUTHQL=${BENCH_AUTHQL:-"$ROOT/target/release/authql"}
FLOOR="$ROOT/target/release/authql-bench-floor"
[[ -x "$AUTHQL" ]] || fail "no $AUTHQL"
[[ -x "$FLOOR" ]] || fail "no $FLOOR"
# The bcrypt timer: benches/bcrypt_time.rs, the server's own bcrypt crate
# (with BENCH_SKIP_BUILD=1, the newest one built).
if [[ "${BENCH_SKIP_BUILD:-0}" == 1 ]]; then
    BCRYPT_TIME=$(find "$ROOT/target/release/deps" -maxdepth 1 -type f -executable -name 'bcrypt_time-*' \
        -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)
else
    BCRYPT_TIME=$(cargo bench --quiet --bench bcrypt_time --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "bcrypt_time":
        print(m["executable"])')
fi
[[ -x "$BCRYPT_TIME" ]] || fail "cannot build benches/bcrypt_time.rs"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$BENCH_DIR/results/$STAMP"
mkdir -p "$OUT"
{
    if [[ -n "${BENCH_AUTHQL:-}" ]]; then
        # Another build: the checkout's commit would name the wrong code.
        echo "authql: $AUTHQL (BENCH_AUTHQL; the checkout is at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
    else
        echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src migration Cargo.toml 2>/dev/null || echo ' (with uncommitted changes)')"
    fi
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cores: $CORES; scenario length: ${DURATION} s; hash-concurrency: ${BENCH_HASH_CONCURRENCY:-default (cores)}"
    if [[ -n "${BENCH_MEMORY_FLAGS:-}" ]]; then echo "memory instance flags: $BENCH_MEMORY_FLAGS"; fi
} >"$OUT/about.txt"
TMP=$(mktemp -d)
SERVER_PIDS=()

cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${SERVER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

# start_server NAME DB_URL [flags...]: sets SERVER_PID and SERVER_URL.
start_server() {
    local name=$1 db=$2
    shift 2
    local log="$RUN_DIR/server-$name.log"
    local extra=()
    if [[ -n "${BENCH_HASH_CONCURRENCY:-}" ]]; then
        extra+=(--hash-concurrency "$BENCH_HASH_CONCURRENCY")
    fi
    "$AUTHQL" serve --database-url "$db" --listen 127.0.0.1:0 --bcrypt-cost "$COST" \
        --login-rate 1000000/second --log-format json "${extra[@]}" "$@" 2>"$log" &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
    local address
    address=$($PY wait-listen "$log" 60) || fail "$name did not start (see $log)"
    SERVER_URL="http://$address"
    curl -fsS "$SERVER_URL/healthz" >/dev/null || fail "$name: /healthz failed"
}

# start_floor: starts bench/floor; sets FLOOR_PID and FLOOR_URL.
start_floor() {
    local log="$RUN_DIR/floor.log"
    "$FLOOR" 127.0.0.1:0 >"$log" 2>&1 &
    FLOOR_PID=$!
    SERVER_PIDS+=("$FLOOR_PID")
    local tries=0
    until grep -q '^listening on ' "$log"; do
        ((tries++ < 100)) || fail "bench/floor did not start (see $log)"
        sleep 0.1
    done
    FLOOR_URL="http://$(sed -n 's/^listening on //p' "$log" | head -1)"
}

stop_server() {
    local pid=$1
    kill -TERM "$pid"
    wait "$pid" || fail "a server (pid $pid) did not stop cleanly"
    forget_pid "$pid"
}

forget_pid() {
    local pid=$1
    local kept=()
    local p
    for p in "${SERVER_PIDS[@]}"; do
        [[ "$p" == "$pid" ]] || kept+=("$p")
    done
    SERVER_PIDS=("${kept[@]}")
}

# wrk_run NAME SCRIPT CONNECTIONS THREADS SECONDS URL: runs wrk, saves its
# output as NAME.txt, prints the figure line, fails on any error.
wrk_run() {
    local name=$1 script=$2 connections=$3 threads=$4 seconds=$5 url=$6
    local file="$RUN_DIR/$name.txt"
    wrk -t "$threads" -c "$connections" -d "${seconds}s" --timeout 30s \
        -s "$BENCH_DIR/$script" "$url" >"$file" 2>&1 || fail "$name: wrk failed (see $file)"
    check_wrk "$name"
}

check_wrk() {
    local name=$1
    local file="$RUN_DIR/$name.txt"
    local line
    line=$(grep '^BENCH ' "$file") || fail "$name: no figures (see $file)"
    local rps p50 p99 failed socket status requests
    rps=$(field rps "$line")
    p50=$(field p50_ms "$line")
    p99=$(field p99_ms "$line")
    failed=$(field failed "$line")
    socket=$(field socket "$line")
    status=$(field wrk_status "$line")
    requests=$(field requests "$line")
    printf '  %-13s %10.1f req/s   p50 %8.2f ms   p99 %8.2f ms   errors %d\n' \
        "$name" "$rps" "$p50" "$p99" "$((failed + socket + status))"
    if ((failed + socket + status > 0)); then
        grep '^BENCH_SAMPLE' "$file" >&2 || true
        fail "$name: $failed failed answers, $socket socket errors, $status non-2xx (see $file)"
    fi
    ((requests > 0)) || fail "$name: no request completed"
}

field() {
    local key=$1 line=$2
    sed -E "s/.*[[:space:]]$key=([^[:space:]]+).*/\\1/" <<<"$line"
}

random_password() {
    # Long, random, JSON-safe: passes the policy and needs no escaping.
    python3 -c 'import secrets; print("bench-" + secrets.token_urlsafe(24).replace("-", "x"))'
}

create_user() {
    local db=$1 name=$2 password=$3
    printf '%s\n' "$password" |
        "$AUTHQL" user create "$name" --password-stdin --database-url "$db" --bcrypt-cost "$COST" \
            >/dev/null 2>"$RUN_DIR/user-$name.log" || fail "cannot create user $name (see $RUN_DIR/user-$name.log)"
}

load_average() { cut -d' ' -f1-3 /proc/loadavg; }

# --- one run ----------------------------------------------------------------
# Memory of one instance started with FLAGS over the run's database
# (one_run's locals db, dbfile, dir, me_user and token): VmRSS idle, then
# after MEMORY_TOKENS new distinct tokens, last used an hour ago, were
# each resolved once (and each use noted and written). Its files in
# RUN_DIR end in SUFFIX.
#   measure_memory SUFFIX [FLAGS...]
measure_memory() {
    local suffix=$1
    shift
    local tokens="$dir/tokens$suffix.txt"
    $PY tokens "$dbfile" "$me_user" "$MEMORY_TOKENS" "$tokens" 3600
    start_server "memory$suffix" "$db" "$@"
    local memory_pid=$SERVER_PID memory_url=$SERVER_URL
    $PY me "$memory_url" "$token" "$me_user"
    sleep 2
    $PY rss "$memory_pid" >"$RUN_DIR/rss_idle$suffix"
    local before
    before=$($PY metric "$memory_url" authql_token_resolutions_total path=database)
    # wrk runs until interrupted (at most 300 s): stop it with SIGINT, after
    # which it reports as usual, once the server has resolved every token.
    BENCH_TOKEN_FILE="$tokens" BENCH_THREADS=$THREADS BENCH_CONNECTIONS=32 \
        wrk -t "$THREADS" -c 32 -d 300s --timeout 30s -s "$BENCH_DIR/tokens.lua" \
        "$memory_url/graphql" >"$RUN_DIR/tokens$suffix.txt" 2>&1 &
    local tokens_pid=$!
    local after=$before
    while kill -0 "$tokens_pid" 2>/dev/null &&
        python3 -c "import sys; sys.exit(0 if $after - $before < $MEMORY_TOKENS else 1)"; do
        sleep 0.5
        after=$($PY metric "$memory_url" authql_token_resolutions_total path=database)
    done
    kill -INT "$tokens_pid" 2>/dev/null || true
    wait "$tokens_pid" || fail "memory$suffix: wrk failed (see $RUN_DIR/tokens$suffix.txt)"
    check_wrk "tokens$suffix"
    after=$($PY metric "$memory_url" authql_token_resolutions_total path=database)
    python3 -c "import sys; sys.exit(0 if $after - $before >= $MEMORY_TOKENS else 1)" ||
        fail "memory$suffix: only $after - $before tokens were resolved from the database, not $MEMORY_TOKENS"
    python3 -c "print(int($after - $before))" >"$RUN_DIR/tokens_resolved$suffix"
    sleep 2
    $PY rss "$memory_pid" >"$RUN_DIR/rss_tokens$suffix"
    $PY metric "$memory_url" authql_token_cache_entries >"$RUN_DIR/cache_entries$suffix"
    $PY me "$memory_url" "$token" "$me_user"
    # Their uses were noted and written.
    $PY last-used "$dbfile" "$(head -1 "$tokens")" 600
    say "  memory$suffix idle $(($(cat "$RUN_DIR/rss_idle$suffix") / 1024)) MiB, after $(cat "$RUN_DIR/tokens_resolved$suffix") tokens $(($(cat "$RUN_DIR/rss_tokens$suffix") / 1024)) MiB (cache entries $(cat "$RUN_DIR/cache_entries$suffix"))"
    stop_server "$memory_pid"
}

one_run() {
    local run=$1
    RUN_DIR="$OUT/run$run"
    mkdir -p "$RUN_DIR"
    echo "$CORES" >"$RUN_DIR/cores"
    local dir="$TMP/run$run"
    mkdir -p "$dir"
    local dbfile="$dir/authql.db"
    local db="sqlite://$dbfile?mode=rwc"

    say "run $run/$RUNS (load average before: $(load_average))"
    echo "before: $(load_average)" >"$RUN_DIR/loadavg"
    local me_user=bench_me login_user=bench_login
    local me_password login_password
    me_password=$(random_password)
    login_password=$(random_password)
    "$AUTHQL" migrate --database-url "$db" >/dev/null 2>&1 || fail "cannot migrate $db"
    create_user "$db" "$me_user" "$me_password"
    create_user "$db" "$login_user" "$login_password"

    start_server cached "$db"
    local cached_pid=$SERVER_PID cached_url=$SERVER_URL
    start_server quiet "$db" --last-used-interval 31536000
    local quiet_pid=$SERVER_PID quiet_url=$SERVER_URL
    start_server uncached "$db" --cache-capacity 0
    local uncached_pid=$SERVER_PID uncached_url=$SERVER_URL
    start_floor

    # Sanity before: a login returns a token, and `me` names the user on
    # every instance. The scenarios use a second token of the same user,
    # last used an hour ago.
    $PY sanity "$cached_url" "$me_user" "$me_password" >/dev/null
    local token
    $PY tokens "$dbfile" "$me_user" 1 "$dir/aged.txt" 3600
    token=$(cat "$dir/aged.txt")
    local url
    for url in "$cached_url" "$quiet_url" "$uncached_url"; do
        $PY me "$url" "$token" "$me_user"
    done
    $PY verify "$cached_url" "$token" "$me_user"
    $PY login "$cached_url" "$login_user" "$login_password"

    # One bcrypt verification at cost 12, on an idle machine, same run.
    "$BCRYPT_TIME" "$COST" 8 >"$RUN_DIR/bcrypt.txt" || fail "bcrypt timing failed"
    local bcrypt_ms
    bcrypt_ms=$(sed -E 's/.*median_ms=([^ ]+).*/\1/' "$RUN_DIR/bcrypt.txt")
    say "  bcrypt cost $COST: one verification ${bcrypt_ms} ms; bound $(python3 -c "print(f'{$CORES / ($bcrypt_ms / 1000):.2f}')") logins/s on $CORES cores"

    export BENCH_TOKEN=$token BENCH_USER=$me_user
    wrk_run bare bare.lua 32 "$THREADS" "$DURATION" "$FLOOR_URL/"
    wrk_run healthz healthz.lua 32 "$THREADS" "$DURATION" "$cached_url/healthz"
    wrk_run verify verify.lua 32 "$THREADS" "$DURATION" "$cached_url/auth/verify"
    wrk_run me_cached me.lua 32 "$THREADS" "$DURATION" "$cached_url/graphql"
    wrk_run me_quiet me.lua 32 "$THREADS" "$DURATION" "$quiet_url/graphql"
    wrk_run me_uncached me.lua 32 "$THREADS" "$DURATION" "$uncached_url/graphql"

    BENCH_USER=$login_user BENCH_PASSWORD=$login_password \
        wrk_run login login.lua 8 1 "$DURATION" "$cached_url/graphql"

    # Storm: logins start first and outlast the `me` load by a second on
    # each side, so every `me` request meets a full bcrypt queue.
    BENCH_USER=$login_user BENCH_PASSWORD=$login_password \
        wrk -t 1 -c 8 -d "$((DURATION + 2))s" --timeout 30s -s "$BENCH_DIR/login.lua" \
        "$cached_url/graphql" >"$RUN_DIR/storm_login.txt" 2>&1 &
    local storm_login_pid=$!
    sleep 1
    wrk_run storm_me me.lua 32 "$THREADS" "$DURATION" "$cached_url/graphql"
    wait "$storm_login_pid" || fail "storm: login wrk failed"
    check_wrk storm_login

    # Saturated: one login while two busy loops a core, at the server's
    # own priority, fill every core. The hashing threads' priority and
    # steps aside may slow a login then, never starve it. First the
    # storm's last hashes finish (their clients are gone, a hash is not
    # cut short), so the login waits for none of them.
    sleep 2
    local spinners=() spinner
    for ((spinner = 0; spinner < 2 * CORES; spinner++)); do
        (while :; do :; done) &
        spinners+=($!)
        SERVER_PIDS+=($!) # stopped by cleanup too, should this script stop here
    done
    local started ended logged_in=yes
    started=$(date +%s.%N)
    $PY login "$cached_url" "$login_user" "$login_password" || logged_in=no
    ended=$(date +%s.%N)
    kill "${spinners[@]}"
    wait "${spinners[@]}" 2>/dev/null || true
    for spinner in "${spinners[@]}"; do
        forget_pid "$spinner"
    done
    [[ $logged_in == yes ]] || fail "saturated: the login failed"
    python3 -c "print(f'{$ended - $started:.3f}')" >"$RUN_DIR/saturated_login_s"
    say "  saturated     one login in $(cat "$RUN_DIR/saturated_login_s") s with $((2 * CORES)) busy loops"

    # Sanity after.
    for url in "$cached_url" "$quiet_url" "$uncached_url"; do
        $PY me "$url" "$token" "$me_user"
    done
    $PY verify "$cached_url" "$token" "$me_user"
    $PY login "$cached_url" "$login_user" "$login_password"
    # The cached instance noted the aged token's use and wrote it.
    $PY last-used "$dbfile" "$token" 600
    stop_server "$cached_pid"
    stop_server "$quiet_pid"
    stop_server "$uncached_pid"
    kill -TERM "$FLOOR_PID"
    wait "$FLOOR_PID" 2>/dev/null || true # poem's bare server dies of the signal
    forget_pid "$FLOOR_PID"

    # Memory: a fresh instance (default cache capacity, 100,000), idle,
    # then after MEMORY_TOKENS distinct tokens, last used an hour ago,
    # resolved through its cache (and each use noted and written). Then
    # the same on an instance with the cache off and tokens of its own:
    # what the load itself leaves resident (connections, threads, the
    # notes), to tell from what the cache holds.
    # shellcheck disable=SC2086 # BENCH_MEMORY_FLAGS is a list of flags
    measure_memory "" ${BENCH_MEMORY_FLAGS:-}
    measure_memory _uncached --cache-capacity 0
    say "  (load average after: $(load_average))"
    echo "after: $(load_average)" >>"$RUN_DIR/loadavg"
    rm -rf "$dir"
}

say "authql load benchmark: $RUNS run(s) of ${DURATION} s per scenario, $CORES cores shared by wrk and the server"
say "results: $OUT"
RUN_DIRS=()
for ((run = 1; run <= RUNS; run++)); do
    one_run "$run"
    RUN_DIRS+=("$OUT/run$run")
done
say ""
$PY report "$OUT" "${RUN_DIRS[@]}"
