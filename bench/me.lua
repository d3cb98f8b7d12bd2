-- me-cached / me-uncached / storm: POST /graphql { me { id username } }
-- with the bearer token in BENCH_TOKEN; every good answer names BENCH_USER.
package.path = (os.getenv("BENCH_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local token = assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN unset")
local user = assert(os.getenv("BENCH_USER"), "BENCH_USER unset")
wrk.method = "POST"
wrk.path = "/graphql"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.body = '{"query":"{ me { id username } }"}'
common.install('"username":"' .. user .. '"')
