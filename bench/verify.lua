-- verify: GET /auth/verify with the bearer token in BENCH_TOKEN, as nginx's
-- auth_request sends it; every good answer is a 200 naming BENCH_USER in
-- X-Authql-Username.
package.path = (os.getenv("BENCH_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local token = assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN unset")
local user = assert(os.getenv("BENCH_USER"), "BENCH_USER unset")
wrk.method = "GET"
wrk.path = "/auth/verify"
wrk.headers["Authorization"] = "Bearer " .. token
common.install(nil, "x-authql-username", user)
