#!/usr/bin/env python3
"""Helpers for bench/load.sh (standard library only).

  bench.py sanity URL USER PASSWORD         log in, then `me`: prints the token
  bench.py me URL TOKEN USER                `me` must name USER
  bench.py verify URL TOKEN USER            GET /auth/verify must name USER
  bench.py login URL USER PASSWORD          a login must return a token
  bench.py wait-listen LOGFILE SECONDS      the address from the server's JSON log
  bench.py rss PID                          VmRSS of PID in KiB
  bench.py metric URL NAME LABEL=VALUE...   a counter or gauge from /metrics
  bench.py tokens DBFILE USER COUNT OUTFILE [AGE]
                                            insert COUNT valid tokens of USER,
                                            made AGE seconds ago (default 0)
  bench.py last-used DBFILE TOKEN SECONDS   the token's lastUsedAt must have been
                                            written within SECONDS
  bench.py requests ADDRESS KIND COUNT TOKEN
                                            COUNT requests one after another on
                                            one kept-alive connection; KIND is
                                            healthz, verify or me; each must
                                            answer 200
  bench.py summarize RUNDIR                 figures of one run -> RUNDIR/figures.json
  bench.py report OUTDIR RUNDIR...          medians over runs -> table, exit 3 on
                                            a missed target when BENCH_ENFORCE=1

Tokens follow src/auth/tokens.rs: `aql_` + base64url-no-pad(32 random
bytes) + base64url-no-pad(first 4 bytes of SHA-256 of those bytes); the
database keeps the lower-case hex SHA-256 of the whole token text.
Nothing here prints a password; `sanity` prints a token for the scripts
that need it, to a file of the run's temporary directory.
"""

import base64
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import sqlite3
import statistics
import sys
import time
import urllib.request

ME = "{ me { id username } }"
LOGIN = ("mutation($u: String!, $p: String!) "
         "{ login(username: $u, password: $p) { token } }")


def die(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def graphql(url, query, variables=None, token=None):
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(url + "/graphql", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, None


def login(url, user, password):
    status, body = graphql(url, LOGIN, {"u": user, "p": password})
    token = ((body or {}).get("data") or {}).get("login", {}) or {}
    token = token.get("token") if isinstance(token, dict) else None
    if status != 200 or not token or not token.startswith("aql_") or body.get("errors"):
        errors = (body or {}).get("errors")
        die(f"login of {user} at {url} returned no token (status {status}, errors {errors})")
    return token


def me(url, token, user):
    status, body = graphql(url, ME, token=token)
    name = (((body or {}).get("data") or {}).get("me") or {}).get("username")
    if status != 200 or name != user or (body or {}).get("errors"):
        errors = (body or {}).get("errors")
        die(f"`me` at {url} did not name {user} (status {status}, got {name!r}, errors {errors})")


def verify(url, token, user):
    request = urllib.request.Request(url + "/auth/verify")
    request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, name = response.status, response.headers.get("X-Authql-Username")
    except urllib.error.HTTPError as err:
        status, name = err.code, None
    if status != 200 or name != user:
        die(f"/auth/verify at {url} did not name {user} (status {status}, got {name!r})")


def last_used(dbfile, token, seconds):
    """The server noted the token's use (it was due) and wrote it."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    db = sqlite3.connect(dbfile, timeout=30)
    row = db.execute("SELECT last_used_at FROM auth_tokens WHERE digest = ?", (digest,)).fetchone()
    db.close()
    if not row or not row[0]:
        die("the benchmark's token has no lastUsedAt: its use was never written")
    written = dt.datetime.fromisoformat(row[0].replace(" ", "T"))
    age = (dt.datetime.now(dt.timezone.utc) - written).total_seconds()
    if age > float(seconds):
        die(f"the benchmark's token was last noted {age:.0f} s ago, not within {seconds} s")


def wait_listen(logfile, seconds):
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        try:
            with open(logfile, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("message") == "authql serving" and event.get("listen"):
                        return event["listen"]
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    die(f"the server did not report its address within {seconds} s (see {logfile})")


def rss_kib(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    die(f"no VmRSS for {pid}")


def metric(url, name, labels):
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = dict(label.split("=", 1) for label in labels)
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'([a-zA-Z_]+)="([^"]*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in wanted.items()):
            total += float(m.group(4))
    return total


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token():
    random = secrets.token_bytes(32)
    return "aql_" + b64(random) + b64(hashlib.sha256(random).digest()[:4])


def insert_tokens(dbfile, user, count, outfile, age=0):
    """Inserts COUNT tokens of USER, made AGE seconds ago and never used
    since, copying the date format the server itself wrote in that user's
    existing token row."""
    db = sqlite3.connect(dbfile, timeout=30)
    row = db.execute("SELECT id FROM users WHERE username = ?", (user,)).fetchone()
    if not row:
        die(f"no user {user} in {dbfile}")
    user_id = row[0]
    sample = db.execute("SELECT created_at FROM auth_tokens WHERE user_id = ? LIMIT 1",
                        (user_id,)).fetchone()
    if not sample:
        die("no token row to copy the date format from (log in first)")
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=int(age))
    expires = now + dt.timedelta(hours=12)

    def fmt(t):
        # The server's rows look like 2024-05-01T10:00:00.123456+00:00 (or
        # with a space): keep its separator.
        sep = " " if " " in sample[0] else "T"
        return t.strftime(f"%Y-%m-%d{sep}%H:%M:%S.%f") + "+00:00"

    tokens = [make_token() for _ in range(int(count))]
    with db:
        db.executemany(
            "INSERT INTO auth_tokens (user_id, digest, created_at, expires_at, user_agent, ip) "
            "VALUES (?, ?, ?, ?, NULL, NULL)",
            ((user_id, hashlib.sha256(t.encode()).hexdigest(), fmt(now), fmt(expires))
             for t in tokens))
    db.close()
    with open(outfile, "w", encoding="ascii") as f:
        f.write("\n".join(tokens) + "\n")


def parse_wrk(path):
    """The BENCH line that bench/common.lua prints."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("BENCH "):
                return {k: float(v) for k, v in
                        (item.split("=", 1) for item in line.split()[1:])}
    die(f"no BENCH line in {path}")


def summarize(rundir):
    """One run's figures, from the files load.sh left in RUNDIR."""
    def read(name):
        with open(os.path.join(rundir, name), encoding="ascii") as f:
            return f.read().strip()

    figures = {}
    for scenario in SCENARIOS:
        figures[scenario] = parse_wrk(os.path.join(rundir, f"{scenario}.txt"))
    cores = int(read("cores"))
    bcrypt_ms = float(re.search(r"median_ms=(\S+)", read("bcrypt.txt")).group(1))
    figures["bcrypt_ms"] = bcrypt_ms
    figures["cores"] = cores
    figures["login_bound"] = cores / (bcrypt_ms / 1000)
    figures["saturated_login_s"] = float(read("saturated_login_s"))
    figures["rss_idle_kib"] = int(read("rss_idle"))
    figures["rss_tokens_kib"] = int(read("rss_tokens"))
    figures["tokens_resolved"] = int(float(read("tokens_resolved")))
    figures["cache_entries"] = int(float(read("cache_entries")))
    figures["rss_idle_uncached_kib"] = int(read("rss_idle_uncached"))
    figures["rss_tokens_uncached_kib"] = int(read("rss_tokens_uncached"))
    figures["ratios"] = ratios(figures)
    with open(os.path.join(rundir, "figures.json"), "w", encoding="ascii") as f:
        json.dump(figures, f, indent=1)
    return figures


# key: (name in the table, concurrency)
SCENARIOS = {
    "bare": ("bare poem floor (bench/floor, GET /)", 32),
    "healthz": ("authql GET /healthz", 32),
    "verify": ("GET /auth/verify", 32),
    "me_cached": ("me-cached", 32),
    "me_quiet": ("me-cached, lastUsedAt never due (--last-used-interval 1 year)", 32),
    "me_uncached": ("me-uncached (--cache-capacity 0)", 32),
    "login": ("login (bcrypt cost 12)", 8),
    "storm_me": ("storm: me-cached", 32),
    "storm_login": ("storm: login", 8),
}


def ratios(f):
    bare = f["bare"]["rps"]
    return {
        "me_cached_over_bare": f["me_cached"]["rps"] / bare,
        "verify_over_bare": f["verify"]["rps"] / bare,
        "healthz_over_bare": f["healthz"]["rps"] / bare,
        "verify_over_me_cached": f["verify"]["rps"] / f["me_cached"]["rps"],
        "verify_p99_ms": f["verify"]["p99_ms"],
        "me_cached_over_quiet": f["me_cached"]["rps"] / f["me_quiet"]["rps"],
        "storm_p99_over_alone": f["storm_me"]["p99_ms"] / f["me_cached"]["p99_ms"],
        "me_cached_over_uncached": f["me_cached"]["rps"] / f["me_uncached"]["rps"],
        "login_over_bound": f["login"]["rps"] / f["login_bound"],
        "storm_me_p99_ms": f["storm_me"]["p99_ms"],
        "storm_me_share": f["storm_me"]["rps"] / f["me_cached"]["rps"],
        "saturated_login_s": f["saturated_login_s"],
        "memory_mib": (f["rss_tokens_kib"] - f["rss_idle_kib"]) / 1024,
        "memory_uncached_mib": (f["rss_tokens_uncached_kib"] - f["rss_idle_uncached_kib"]) / 1024,
        "memory_cache_mib": ((f["rss_tokens_kib"] - f["rss_idle_kib"])
                             - (f["rss_tokens_uncached_kib"] - f["rss_idle_uncached_kib"])) / 1024,
    }


TARGETS = [
    # key, label, comparison, target, format
    ("me_cached_over_bare", "me-cached / bare floor (issue 16)", ">=", 0.40, "{:.2f}"),
    ("verify_over_bare", "verify / bare floor (issue 16)", ">=", 0.70, "{:.2f}"),
    ("healthz_over_bare", "healthz / bare floor (for the record)", ">=", 0.0, "{:.2f}"),
    ("verify_over_me_cached", "verify / me-cached (issue 14)", ">=", 1.5, "{:.2f}"),
    ("verify_p99_ms", "verify p99 (ms, issue 14)", "<", 5.0, "{:.2f}"),
    ("me_cached_over_quiet", "me-cached / me-quiet: lastUsedAt's cost (issue 14)", ">=", 0.95, "{:.3f}"),
    ("storm_p99_over_alone", "storm: me p99 / me-cached p99 (issue 16)", "<=", 2.0, "{:.2f}"),
    ("me_cached_over_uncached", "me-cached / me-uncached", ">=", 2.0, "{:.2f}"),
    ("login_over_bound", "login / bound", ">=", 0.9, "{:.2f}"),
    ("storm_me_p99_ms", "storm: me p99 (ms)", "<=", 25.0, "{:.1f}"),
    ("storm_me_share", "storm: me throughput / me-cached", ">=", 0.20, "{:.2f}"),
    # Alive, not fast: within the server's 30 s execution timeout.
    ("saturated_login_s", "saturated: one login while busy loops fill every core (s, within the 30 s execution timeout)", "<", 30.0, "{:.1f}"),
    ("memory_mib", "memory for 100,000 cached tokens (MiB above idle, issue 16)", "<=", 40.0, "{:.1f}"),
    # For the record: the same load with the cache off, and the difference,
    # which is what the cache itself holds.
    ("memory_uncached_mib", "memory, the same load with the cache off (MiB above idle, for the record)",
     ">=", 0.0, "{:.1f}"),
    ("memory_cache_mib", "memory the cache adds (the two above's difference, for the record)",
     ">=", 0.0, "{:.1f}"),
]


def report(outdir, rundirs):
    runs = [summarize(d) for d in rundirs]

    def med(get):
        return statistics.median(get(r) for r in runs)

    about = ""
    about_file = os.path.join(outdir, "about.txt")
    if os.path.exists(about_file):
        with open(about_file, encoding="utf-8") as f:
            about = "; ".join(line.strip() for line in f if line.strip())
    lines = [f"Medians of {len(runs)} run(s); {runs[0]['cores']} cores shared by "
             "client (wrk) and server.", ""]
    if about:
        lines[0:0] = [about, ""]
    lines += ["| scenario | concurrency | req/s | / bare | p50 (ms) | p99 (ms) | errors |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, (name, concurrency) in SCENARIOS.items():
        rps = med(lambda r: r[key]["rps"])
        p50 = med(lambda r: r[key]["p50_ms"])
        p99 = med(lambda r: r[key]["p99_ms"])
        errors = int(sum(r[key]["failed"] + r[key]["socket"] + r[key]["wrk_status"]
                         for r in runs))
        share = med(lambda r: r[key]["rps"] / r["bare"]["rps"])
        lines.append(f"| {name} | {concurrency} | {rps:,.1f} | {share:.3f} | {p50:.2f} | {p99:.2f} | {errors} |")
    lines += ["",
              f"bcrypt verification at cost 12: {med(lambda r: r['bcrypt_ms']):.1f} ms; "
              f"login bound = {runs[0]['cores']} cores / that = {med(lambda r: r['login_bound']):.2f} logins/s.",
              f"Resident memory: idle {med(lambda r: r['rss_idle_kib']) / 1024:.1f} MiB, after "
              f"{med(lambda r: r['tokens_resolved']):,.0f} distinct tokens resolved "
              f"{med(lambda r: r['rss_tokens_kib']) / 1024:.1f} MiB "
              f"(cache entries reported: {med(lambda r: r['cache_entries']):,.0f}); with the cache "
              f"off, idle {med(lambda r: r['rss_idle_uncached_kib']) / 1024:.1f} MiB, after as many "
              f"{med(lambda r: r['rss_tokens_uncached_kib']) / 1024:.1f} MiB.",
              "",
              "| figure | target | median | runs | met |",
              "| --- | --- | ---: | --- | --- |"]
    missed = []
    for key, label, op, target, form in TARGETS:
        values = [r["ratios"][key] for r in runs]
        value = statistics.median(values)
        met = {">=": value >= target, "<=": value <= target, "<": value < target}[op]
        if not met:
            missed.append(label)
        each = ", ".join(form.format(v) for v in values)
        lines.append(f"| {label} | {op} {target:g} | {form.format(value)} | {each} | "
                     f"{'yes' if met else '**no**'} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(outdir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(outdir, "figures.json"), "w", encoding="ascii") as f:
        json.dump(runs, f, indent=1)
    print(text)
    if missed:
        print("targets missed: " + "; ".join(missed))
        if os.environ.get("BENCH_ENFORCE") == "1":
            sys.exit(3)
    else:
        print("every target met")


def requests(address, kind, count, token):
    """One connection, one request at a time: what instructions.sh counts."""
    import http.client

    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    bearer = {"Authorization": "Bearer " + token}
    body = json.dumps({"query": ME})
    for _ in range(int(count)):
        if kind == "healthz":
            connection.request("GET", "/healthz")
        elif kind == "verify":
            connection.request("GET", "/auth/verify", headers=bearer)
        elif kind == "me":
            headers = dict(bearer, **{"Content-Type": "application/json"})
            connection.request("POST", "/graphql", body=body, headers=headers)
        else:
            die(f"unknown request kind {kind}")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            die(f"{kind}: status {response.status}")


def main(argv):
    if len(argv) < 2:
        die(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "sanity":
        url, user, password = args
        token = login(url, user, password)
        me(url, token, user)
        print(token)
    elif cmd == "me":
        me(*args)
    elif cmd == "verify":
        verify(*args)
    elif cmd == "last-used":
        last_used(*args)
    elif cmd == "login":
        login(*args)
    elif cmd == "wait-listen":
        print(wait_listen(*args))
    elif cmd == "rss":
        print(rss_kib(args[0]))
    elif cmd == "metric":
        print(metric(args[0], args[1], args[2:]))
    elif cmd == "tokens":
        insert_tokens(*args)
    elif cmd == "requests":
        requests(*args)
    elif cmd == "summarize":
        print(json.dumps(summarize(args[0]), indent=1))
    elif cmd == "report":
        report(args[0], args[1:])
    else:
        die(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
