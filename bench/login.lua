-- login / storm: the login mutation with BENCH_USER / BENCH_PASSWORD;
-- every good answer carries a token.
package.path = (os.getenv("BENCH_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local user = assert(os.getenv("BENCH_USER"), "BENCH_USER unset")
local password = assert(os.getenv("BENCH_PASSWORD"), "BENCH_PASSWORD unset")
wrk.method = "POST"
wrk.path = "/graphql"
wrk.headers["Content-Type"] = "application/json"
-- The names and password are plain ASCII without quotes (load.sh makes
-- them so): no JSON escaping needed.
wrk.body = '{"query":"mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }",'
   .. '"variables":{"u":"' .. user .. '","p":"' .. password .. '"}}'
common.install('"token":"aql_')
